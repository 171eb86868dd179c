package appservice

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
)

func (s *Service) queryTimeout() time.Duration {
	if s.QueryTimeout > 0 {
		return s.QueryTimeout
	}
	return 10 * time.Second
}

// QueryAlias asks the services whose alias namespaces hold a, in turn,
// whether it exists (GET /_matrix/app/v1/rooms/{alias}); true when one
// said yes, which means it has just created the room and the alias.
func (s *Service) QueryAlias(ctx context.Context, a id.RoomAlias) bool {
	for _, reg := range s.Registry.All() {
		if reg.BaseURL() == "" || !reg.MatchesAlias(a) {
			continue
		}
		st, _, err := s.call(ctx, reg, http.MethodGet, "/_matrix/app/v1/rooms/"+url.PathEscape(string(a)), nil, nil, s.queryTimeout())
		if err != nil {
			s.log().Info("alias query failed", "appservice", reg.ID, "alias", a, "err", err)
			continue
		}
		if st/100 == 2 {
			return true
		}
	}
	return false
}

// QueryUser asks the services whose user namespaces hold u whether it
// exists (GET /_matrix/app/v1/users/{userId}); true when one said yes
// (it has then registered the user).
func (s *Service) QueryUser(ctx context.Context, u id.UserID) bool {
	for _, reg := range s.Registry.All() {
		if reg.BaseURL() == "" || !match(reg.Namespaces.Users, string(u), false) {
			continue
		}
		st, _, err := s.call(ctx, reg, http.MethodGet, "/_matrix/app/v1/users/"+url.PathEscape(string(u)), nil, nil, s.queryTimeout())
		if err != nil {
			s.log().Info("user query failed", "appservice", reg.ID, "user", u, "err", err)
			continue
		}
		if st/100 == 2 {
			return true
		}
	}
	return false
}

// Ping calls the service's /_matrix/app/v1/ping and reports how long it
// took, or the spec's error: M_URL_NOT_SET (400), M_CONNECTION_TIMEOUT
// (504), M_CONNECTION_FAILED (502), M_BAD_STATUS (502, with the service's
// status and body).
func (s *Service) Ping(ctx context.Context, reg *Registration, txnID string) (time.Duration, error) {
	if reg.BaseURL() == "" {
		return 0, &httpapi.Error{Status: http.StatusBadRequest, Code: "M_URL_NOT_SET", Message: "the application service has no URL configured"}
	}
	body := map[string]any{}
	if txnID != "" {
		body["transaction_id"] = txnID
	}
	b, _ := json.Marshal(body)
	start := time.Now()
	st, resp, err := s.call(ctx, reg, http.MethodPost, "/_matrix/app/v1/ping", nil, b, s.queryTimeout())
	took := time.Since(start)
	if err != nil {
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
			return 0, &httpapi.Error{Status: http.StatusGatewayTimeout, Code: "M_CONNECTION_TIMEOUT", Message: "the application service did not answer in time"}
		}
		return 0, &httpapi.Error{Status: http.StatusBadGateway, Code: "M_CONNECTION_FAILED", Message: "could not reach the application service: " + err.Error()}
	}
	if st/100 != 2 {
		return 0, (&httpapi.Error{Status: http.StatusBadGateway, Code: "M_BAD_STATUS", Message: "ping returned status " + http.StatusText(st)}).
			With("status", st).With("body", string(resp))
	}
	return took, nil
}

// ThirdParty proxies a third-party lookup to services (path is after
// /_matrix/app/v1/thirdparty/, e.g. "protocol/irc" or "user/irc"). Array
// answers are concatenated; for an object (protocol metadata) the first
// good answer wins. It returns nil when no service answered.
func (s *Service) ThirdParty(ctx context.Context, regs []*Registration, path string, query url.Values) (any, error) {
	var list []json.RawMessage
	var obj json.RawMessage
	answered := false
	for _, reg := range regs {
		if reg.BaseURL() == "" {
			continue
		}
		st, body, err := s.call(ctx, reg, http.MethodGet, "/_matrix/app/v1/thirdparty/"+path, query, nil, s.queryTimeout())
		if err != nil || st/100 != 2 {
			s.log().Info("third-party query failed", "appservice", reg.ID, "path", path, "status", st, "err", err)
			continue
		}
		var arr []json.RawMessage
		if json.Unmarshal(body, &arr) == nil {
			list = append(list, arr...)
			answered = true
			continue
		}
		if obj == nil && json.Valid(body) && len(body) > 0 && body[0] == '{' {
			obj = body
			answered = true
		}
	}
	if !answered {
		return nil, nil
	}
	if obj != nil {
		return obj, nil
	}
	if list == nil {
		list = []json.RawMessage{}
	}
	return list, nil
}
