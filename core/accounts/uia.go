package accounts

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// UIASessionTTL is how long a user-interactive auth session lives.
const UIASessionTTL = 30 * time.Minute

// Flow is one list of stages that together authenticate a request.
type Flow []string

// AuthDict is the client's "auth" object.
type AuthDict struct {
	Type    string `json:"type"`
	Session string `json:"session"`
	// The rest of the object, for the stage's checker.
	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON keeps the raw object too.
func (a *AuthDict) UnmarshalJSON(b []byte) error {
	type plain AuthDict
	if err := json.Unmarshal(b, (*plain)(a)); err != nil {
		return err
	}
	a.Raw = append(a.Raw[:0], b...)
	return nil
}

// StageChecker verifies one completed stage; it returns an *httpapi.Error
// (e.g. M_FORBIDDEN) when the stage's credentials are wrong.
type StageChecker func(ctx context.Context, stage string, auth *AuthDict) error

// UIA runs user-interactive authentication for one request.
type UIA struct {
	// Purpose binds a session to one endpoint (and User, if set, to one user),
	// so a session completed for one thing cannot authorise another.
	Purpose string
	User    id.UserID
	Flows   []Flow
	Params  map[string]any
	Check   StageChecker
}

type uiaRecord struct {
	Purpose   string    `json:"purpose"`
	User      id.UserID `json:"user,omitempty"`
	Completed []string  `json:"completed"`
}

func uiaKey(session string) table.Key { return table.Key{PK: "uia#" + session, SK: "uia"} }

// RunUIA advances the UIA state machine. It returns done=true when some flow is
// complete (the session is then consumed); otherwise the *httpapi.Response
// to send (401 with flows, params, session, completed and maybe an error).
func (s *Service) RunUIA(ctx context.Context, u UIA, auth *AuthDict) (bool, *httpapi.Response, error) {
	if auth == nil {
		sess, err := s.newUIASession(ctx, u)
		if err != nil {
			return false, nil, err
		}
		return false, u.challenge(sess, nil, nil), nil
	}
	rec := uiaRecord{Purpose: u.Purpose, User: u.User}
	var version int64
	session := auth.Session
	if session != "" {
		it, err := s.T.Get(ctx, uiaKey(session))
		if errors.Is(err, table.ErrNotFound) {
			return false, nil, httpapi.NotFound("unknown user-interactive auth session")
		}
		if err != nil {
			return false, nil, err
		}
		if err := json.Unmarshal(it.Data, &rec); err != nil {
			return false, nil, err
		}
		if rec.Purpose != u.Purpose || rec.User != u.User {
			return false, nil, httpapi.Forbidden("auth session belongs to another request")
		}
		version = it.Version
	} else {
		var err error
		if session, err = s.newUIASession(ctx, u); err != nil {
			return false, nil, err
		}
		version = 1
	}
	if len(rec.Completed) > 0 && u.complete(rec.Completed) && (auth.Type == "" || slices.Contains(rec.Completed, auth.Type)) {
		// Stages completed out of band (the m.login.sso fallback page,
		// CompleteUIAStage): the request repeated with the session goes
		// through, consuming the session as below.
		if err := s.T.Delete(ctx, uiaKey(session), table.IfVersion(version)); err != nil {
			if errors.Is(err, table.ErrConditionFailed) {
				return false, nil, httpapi.Forbidden("auth session was used concurrently")
			}
			return false, nil, err
		}
		return true, nil, nil
	}
	if auth.Type == "" {
		// A request that only names the session asks where it stands.
		return false, u.challenge(session, rec.Completed, nil), nil
	}
	if !u.allows(rec.Completed, auth.Type) {
		return false, u.challenge(session, rec.Completed, httpapi.BadRequest("stage %q is not expected here", auth.Type)), nil
	}
	if err := u.Check(ctx, auth.Type, auth); err != nil {
		var he *httpapi.Error
		if errors.As(err, &he) {
			return false, u.challenge(session, rec.Completed, he), nil
		}
		return false, nil, err
	}
	if !slices.Contains(rec.Completed, auth.Type) {
		rec.Completed = append(rec.Completed, auth.Type)
	}
	if u.complete(rec.Completed) {
		// Consume the session: exactly one request may use it.
		if err := s.T.Delete(ctx, uiaKey(session), table.IfVersion(version)); err != nil {
			if errors.Is(err, table.ErrConditionFailed) {
				return false, nil, httpapi.Forbidden("auth session was used concurrently")
			}
			return false, nil, err
		}
		return true, nil, nil
	}
	data, _ := json.Marshal(rec)
	err := s.T.Put(ctx, table.Item{PK: uiaKey(session).PK, SK: "uia", Data: data, Version: version + 1,
		TTL: s.now().Add(UIASessionTTL).Unix()}, table.IfVersion(version))
	if err != nil {
		if errors.Is(err, table.ErrConditionFailed) {
			return false, nil, httpapi.Forbidden("auth session was used concurrently")
		}
		return false, nil, err
	}
	return false, u.challenge(session, rec.Completed, nil), nil
}

func (s *Service) newUIASession(ctx context.Context, u UIA) (string, error) {
	session := NewToken("")
	data, _ := json.Marshal(uiaRecord{Purpose: u.Purpose, User: u.User, Completed: []string{}})
	err := s.T.Put(ctx, table.Item{PK: uiaKey(session).PK, SK: "uia", Data: data, Version: 1,
		TTL: s.now().Add(UIASessionTTL).Unix()}, table.IfNotExists())
	return session, err
}

// allows reports whether stage can come next in some flow given what is done.
func (u UIA) allows(done []string, stage string) bool {
	for _, f := range u.Flows {
		if slices.Contains(f, stage) && prefixDone(f, done) {
			return true
		}
	}
	return false
}

// prefixDone: every completed stage belongs to this flow.
func prefixDone(f Flow, done []string) bool {
	for _, d := range done {
		if !slices.Contains(f, d) {
			return false
		}
	}
	return true
}

func (u UIA) complete(done []string) bool {
	for _, f := range u.Flows {
		all := true
		for _, st := range f {
			if !slices.Contains(done, st) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

func (u UIA) challenge(session string, completed []string, e *httpapi.Error) *httpapi.Response {
	flows := make([]map[string]any, len(u.Flows))
	for i, f := range u.Flows {
		flows[i] = map[string]any{"stages": f}
	}
	params := u.Params
	if params == nil {
		params = map[string]any{}
	}
	if completed == nil {
		completed = []string{}
	}
	body := map[string]any{"flows": flows, "params": params, "session": session, "completed": completed}
	if e != nil {
		body["errcode"] = e.Code
		body["error"] = e.Message
	}
	return &httpapi.Response{Status: http.StatusUnauthorized, Body: body}
}
