package slidingsync

import (
	"bytes"
	"encoding/json"
	"errors"
	"time"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
)

// maxTimeoutMS bounds the timeout parameter (the wait itself is capped by
// the /sync service's MaxWait).
const maxTimeoutMS = 24 * 60 * 60 * 1000

// Serve is the HTTP handler of
// POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync.
// pos and timeout are query parameters (Element X) or body fields (the
// MSC's current form); the query wins when both are given.
func (s *Service) Serve(r *httpapi.Request) (any, error) {
	b, err := r.Body()
	if err != nil {
		return nil, err
	}
	req := &Request{}
	if err := decode(b, req); err != nil {
		return nil, err
	}
	q := r.URL.Query()
	if p := q.Get("pos"); p != "" {
		req.Pos = p
	}
	ms, err := r.QueryInt("timeout", -1, 0, maxTimeoutMS)
	if err != nil {
		return nil, err
	}
	if ms < 0 {
		ms = 0
		if req.Timeout != nil {
			if *req.Timeout < 0 || *req.Timeout > maxTimeoutMS {
				return nil, httpapi.InvalidParam("timeout must be an integer in [0, %d]", maxTimeoutMS)
			}
			ms = *req.Timeout
		}
	}
	if c := q.Get("conn_id"); c != "" && req.ConnID == "" {
		req.ConnID = c
	}
	if p := q.Get("set_presence"); p != "" {
		req.SetPresence = p
	}
	return s.Handle(r.Ctx(), &Call{User: r.Caller.UserID, Device: r.Caller.DeviceID, Req: req,
		Timeout: time.Duration(ms) * time.Millisecond})
}

// decode reads the body: empty means {}, not JSON (or not an object) is
// M_NOT_JSON, the wrong shape M_BAD_JSON, and values the request's own
// checks refuse keep their error (M_INVALID_PARAM).
func decode(b []byte, req *Request) error {
	t := bytes.TrimSpace(b)
	if len(t) == 0 {
		return nil
	}
	if !json.Valid(t) {
		return httpapi.NotJSON("request body is not valid JSON")
	}
	if t[0] != '{' {
		return httpapi.NotJSON("request body must be a JSON object")
	}
	if err := json.Unmarshal(t, req); err != nil {
		var he *httpapi.Error
		if errors.As(err, &he) {
			return he
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return httpapi.BadJSON("field %q has the wrong type", te.Field)
		}
		return httpapi.BadJSON("request body has the wrong shape: %v", err)
	}
	return nil
}
