package e2e

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

// TestSharedRateLimits: two server instances over one table (what two
// Lambda instances are) together admit one limit's worth of requests; with
// per-process limits they admit twice as much. The refusal is 429
// M_LIMIT_EXCEEDED with retry_after_ms and Retry-After.
func TestSharedRateLimits(t *testing.T) {
	for _, engine := range []string{"embedded", "aws"} {
		for _, shared := range []bool{true, false} {
			name := engine + "/per-process"
			if shared {
				name = engine + "/shared"
			}
			t.Run(name, func(t *testing.T) {
				// The register class's window is 50 s: a run that crosses a
				// window boundary may admit more, so it is repeated on a
				// fresh server.
				window := func() int64 { return time.Now().UnixMilli() / 50_000 }
				for attempt := 1; ; attempt++ {
					start := window()
					allowed := sharedLimitRound(t, engine, shared)
					if !shared && allowed != 20 {
						t.Fatalf("per-process limits: allowed %d of 20, want 20", allowed)
					}
					if !shared || allowed == 10 {
						return
					}
					if window() == start || attempt == 3 {
						t.Fatalf("shared limits: allowed %d of 20, want 10", allowed)
					}
				}
			})
		}
	}
}

// sharedLimitRound sends 20 register-class requests alternately to two
// instances and returns how many were admitted.
func sharedLimitRound(t *testing.T, engine string, shared bool) int {
	t.Helper()
	env := testenv.Start(t, engine, map[string]string{"CIRRUS_RATE_LIMITS": "true", "CIRRUS_RATE_LIMITS_SHARED": strconv.FormatBool(shared)})
	// A second instance: its own handler (and limiter) over the same table.
	second := httptest.NewServer(env.Apps[0].Server.Handler())
	t.Cleanup(second.Close)
	urls := []string{env.URL, second.URL}
	allowed := 0
	var refusal *http.Response
	for i := range 20 {
		resp, err := http.Get(urls[i%2] + "/_matrix/client/v3/register/available?username=free" + strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			allowed++
		case http.StatusTooManyRequests:
			refusal = resp
		default:
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if shared && allowed == 10 {
		if refusal == nil || refusal.Header.Get("Retry-After") == "" {
			t.Fatalf("refusal without Retry-After: %v", refusal)
		}
		st, body, _ := do(t, env, http.MethodGet, "/_matrix/client/v3/register/available?username=again", "", "")
		if ms, _ := body["retry_after_ms"].(float64); st != 429 || body["errcode"] != "M_LIMIT_EXCEEDED" || ms <= 0 || ms > 50_000 {
			t.Fatalf("refusal: %d %v", st, body)
		}
	}
	return allowed
}
