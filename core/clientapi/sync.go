package clientapi

import (
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/core/clientsync"
	"github.com/cirrus-matrix/cirrus/core/filter"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/userdata"
)

// SyncAPI serves GET /sync.
type SyncAPI struct {
	Service  *clientsync.Service
	UserData *userdata.Service
}

// maxTimeoutMS bounds the timeout parameter (the server caps the wait far
// lower; this only rejects nonsense).
const maxTimeoutMS = 24 * 60 * 60 * 1000

// Sync serves GET /sync.
func (a *SyncAPI) Sync(r *httpapi.Request) (any, error) {
	q := r.URL.Query()
	req := &clientsync.Request{User: r.Caller.UserID, Device: r.Caller.DeviceID}
	if s := q.Get("since"); s != "" {
		t, ok := clientsync.ParseToken(s)
		if !ok {
			return nil, httpapi.InvalidParam("invalid since token %q", s)
		}
		req.Since = &t
	}
	switch q.Get("full_state") {
	case "", "false":
	case "true":
		req.FullState = true
	default:
		return nil, httpapi.InvalidParam("full_state must be true or false")
	}
	ms, err := r.QueryInt("timeout", 0, 0, maxTimeoutMS)
	if err != nil {
		return nil, err
	}
	req.Timeout = time.Duration(ms) * time.Millisecond
	switch p := q.Get("set_presence"); p {
	case "":
	case userdata.PresenceOnline, userdata.PresenceUnavailable, userdata.PresenceOffline:
		req.SetPresence = p
	default:
		return nil, httpapi.InvalidParam("set_presence must be online, unavailable or offline")
	}
	switch v := q.Get("use_state_after"); v {
	case "", "false":
	case "true":
		req.UseStateAfter = true
	default:
		return nil, httpapi.InvalidParam("use_state_after must be true or false")
	}
	if req.Filter, err = a.resolveFilter(r, q.Get("filter")); err != nil {
		return nil, err
	}
	return a.Service.Sync(r.Ctx(), req)
}

// resolveFilter reads the filter parameter: inline JSON (it starts with
// "{") or the id of a filter the caller uploaded.
func (a *SyncAPI) resolveFilter(r *httpapi.Request, s string) (*filter.Filter, error) {
	if s == "" {
		return &filter.Filter{}, nil
	}
	raw := []byte(s)
	if !strings.HasPrefix(strings.TrimSpace(s), "{") {
		stored, err := a.UserData.GetFilter(r.Ctx(), r.Caller.UserID, s)
		if err != nil {
			return nil, err
		}
		if stored == nil {
			return nil, httpapi.InvalidParam("unknown filter %q", s)
		}
		raw = stored
	}
	f, err := filter.Parse(raw)
	if err != nil {
		return nil, httpapi.InvalidParam("invalid filter: %v", err)
	}
	return f, nil
}
