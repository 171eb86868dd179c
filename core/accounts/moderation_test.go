package accounts

import (
	"context"
	"sync"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
)

func callerOf(t *testing.T, s *Service, tok string) *httpapi.Caller {
	t.Helper()
	c, err := s.Authenticate(context.Background(), tok)
	if err != nil {
		t.Fatalf("authenticate: %v", err)
	}
	return c
}

// TestModerationFlagsReachEveryToken: suspension and locking reach the
// tokens that exist, the ones made afterwards, and the ones made while the
// change is being written; locked accounts get no new token.
func TestModerationFlagsReachEveryToken(t *testing.T) {
	s, _ := newService(t)
	ctx := context.Background()
	u := id.NewUserID("bob", "test.local")
	first := register(t, s, "bob")

	if err := s.SetSuspended(ctx, u, true); err != nil {
		t.Fatal(err)
	}
	if c := callerOf(t, s, first.AccessToken); !c.Suspended || c.Locked {
		t.Fatalf("existing token after suspension: %+v", c)
	}
	later, err := s.Login(ctx, u, false, LoginOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := callerOf(t, s, later.AccessToken); !c.Suspended {
		t.Fatal("a token made after the suspension is not suspended")
	}
	if a, _ := s.GetAccount(ctx, u); !a.Suspended {
		t.Fatal("account not suspended")
	}

	if err := s.SetLocked(ctx, u, true); err != nil {
		t.Fatal(err)
	}
	if c := callerOf(t, s, later.AccessToken); !c.Locked || !c.Suspended {
		t.Fatalf("after locking: %+v", c)
	}
	if _, err := s.Login(ctx, u, false, LoginOptions{}); err == nil {
		t.Fatal("a locked account logged in")
	} else if he, ok := httpapi.AsError(err); !ok || he.Code != "M_USER_LOCKED" || he.Status != 401 {
		t.Fatalf("login while locked: %v", err)
	}

	// Unlocking and unsuspending clear every token.
	if err := s.SetLocked(ctx, u, false); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSuspended(ctx, u, false); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{first.AccessToken, later.AccessToken} {
		if c := callerOf(t, s, tok); c.Locked || c.Suspended {
			t.Fatalf("flags left after lifting: %+v", c)
		}
	}

	// Logins racing a suspension: every token that exists afterwards is
	// suspended, whichever order the writes took.
	var wg sync.WaitGroup
	toks := make(chan string, 20)
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sess, err := s.Login(ctx, u, false, LoginOptions{})
			if err != nil {
				t.Error(err)
				return
			}
			toks <- sess.AccessToken
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := s.SetSuspended(ctx, u, true); err != nil {
			t.Error(err)
		}
	}()
	wg.Wait()
	close(toks)
	for tok := range toks {
		if c := callerOf(t, s, tok); !c.Suspended {
			t.Fatal("a login racing the suspension kept an unsuspended token")
		}
	}

	// Unknown and deactivated accounts.
	if err := s.SetLocked(ctx, id.NewUserID("nobody", "test.local"), true); err == nil {
		t.Fatal("locked an unknown account")
	}
}
