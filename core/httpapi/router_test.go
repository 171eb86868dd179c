package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"
)

type fakeAuth struct{}

func (fakeAuth) Authenticate(_ context.Context, tok string) (*Caller, error) {
	if tok == "good" {
		return &Caller{UserID: "@u:x", DeviceID: "D"}, nil
	}
	return nil, UnknownToken("bad token")
}

func testRouter() http.Handler {
	routes := []Route{
		{Method: "GET", Path: "/ok", Handle: func(r *Request) (any, error) { return map[string]int{"n": 1}, nil }},
		{Method: "POST", Path: "/echo", Handle: func(r *Request) (any, error) {
			var v struct {
				N int `json:"n"`
			}
			if err := r.DecodeJSON(&v); err != nil {
				return nil, err
			}
			return v, nil
		}},
		{Method: "GET", Path: "/panic", Handle: func(r *Request) (any, error) { panic("boom") }},
		{Method: "GET", Path: "/fail", Handle: func(r *Request) (any, error) { return nil, io.ErrUnexpectedEOF }},
		{Method: "GET", Path: "/me", Auth: AuthRequired, Handle: func(r *Request) (any, error) {
			return map[string]id.UserID{"user_id": r.Caller.UserID}, nil
		}},
		{Method: "GET", Path: "/maybe", Auth: AuthOptional, Handle: func(r *Request) (any, error) {
			return map[string]bool{"authed": r.Caller != nil}, nil
		}},
		{Method: "GET", Path: "/items/{id}", Handle: func(r *Request) (any, error) { return map[string]string{"id": r.PathValue("id")}, nil }},
		{Method: "GET", Path: "/limited", Limit: "x", Handle: func(r *Request) (any, error) { return Empty{}, nil }},
		{Method: "POST", Path: "/created", Handle: func(r *Request) (any, error) { return &Response{Status: 201, Body: Empty{}}, nil }},
	}
	now := time.Unix(1000, 0)
	return NewRouter(routes, Options{Auth: fakeAuth{}, MaxBody: 64, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Limiter: NewLimiter(map[string]Rate{"x": {PerSecond: 1, Burst: 2}}, func() time.Time { return now })})
}

func TestRouter(t *testing.T) {
	h := testRouter()
	cases := []struct {
		name, method, path, auth, body string
		status                         int
		want                           string // substring of the body
	}{
		{"ok", "GET", "/ok", "", "", 200, `"n":1`},
		{"head of get", "HEAD", "/ok", "", "", 200, ""},
		{"unknown", "GET", "/nope", "", "", 404, `"M_UNRECOGNIZED"`},
		{"method", "PUT", "/ok", "", "", 405, `"M_UNRECOGNIZED"`},
		{"echo", "POST", "/echo", "", `{"n":7}`, 200, `"n":7`},
		{"not json", "POST", "/echo", "", `{"n":`, 400, `"M_NOT_JSON"`},
		{"bad json", "POST", "/echo", "", `{"n":"seven"}`, 400, `"M_BAD_JSON"`},
		{"too large", "POST", "/echo", "", `{"n":1,"pad":"` + strings.Repeat("x", 100) + `"}`, 413, `"M_TOO_LARGE"`},
		{"panic", "GET", "/panic", "", "", 500, `"M_UNKNOWN"`},
		{"internal error hidden", "GET", "/fail", "", "", 500, `"internal server error"`},
		{"missing token", "GET", "/me", "", "", 401, `"M_MISSING_TOKEN"`},
		{"bad scheme", "GET", "/me", "Basic abc", "", 401, `"M_MISSING_TOKEN"`},
		{"bad token", "GET", "/me", "Bearer nope", "", 401, `"M_UNKNOWN_TOKEN"`},
		{"good token", "GET", "/me", "Bearer good", "", 200, `"@u:x"`},
		{"optional without", "GET", "/maybe", "", "", 200, `"authed":false`},
		{"optional with", "GET", "/maybe", "Bearer good", "", 200, `"authed":true`},
		{"path value", "GET", "/items/%23a%3Ab", "", "", 200, `"#a:b"`},
		{"status", "POST", "/created", "", "", 201, `{}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.want) {
				t.Fatalf("got %d %s, want %d containing %s", rec.Code, rec.Body, tc.status, tc.want)
			}
			if rec.Header().Get("Access-Control-Allow-Origin") != "*" || rec.Header().Get("X-Request-Id") == "" {
				t.Fatalf("missing CORS or request id headers: %v", rec.Header())
			}
			if rec.Code >= 400 {
				var e map[string]any
				if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e["errcode"] == nil || e["error"] == nil {
					t.Fatalf("error body %s", rec.Body)
				}
			}
		})
	}
}

func TestRateLimit(t *testing.T) {
	h := testRouter()
	codes := []int{}
	for range 3 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/limited", nil))
		codes = append(codes, rec.Code)
		if rec.Code == 429 {
			if !strings.Contains(rec.Body.String(), "retry_after_ms") || rec.Header().Get("Retry-After") == "" {
				t.Fatalf("429 without retry info: %s %v", rec.Body, rec.Header())
			}
		}
	}
	if codes[0] != 200 || codes[1] != 200 || codes[2] != 429 {
		t.Fatalf("codes %v, want burst of 2 then 429", codes)
	}
}

func TestOptions(t *testing.T) {
	rec := httptest.NewRecorder()
	testRouter().ServeHTTP(rec, httptest.NewRequest("OPTIONS", "/anything/at/all", nil))
	if rec.Code != 204 || rec.Header().Get("Access-Control-Allow-Methods") == "" {
		t.Fatalf("preflight %d %v", rec.Code, rec.Header())
	}
}
