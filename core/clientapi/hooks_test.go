package clientapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/accounts"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/infra/bolt"
)

// hooks records the calls the account endpoints make into the rooms
// subsystem.
type hooks struct {
	mu      sync.Mutex
	changes []string
	leaves  []id.UserID
	fail    error
}

func (h *hooks) ProfileChanged(_ context.Context, u id.UserID, name, avatar string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.changes = append(h.changes, string(u)+"|"+name+"|"+avatar)
	return h.fail
}

func (h *hooks) LeaveAllRooms(_ context.Context, u id.UserID) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.leaves = append(h.leaves, u)
	return h.fail
}

func newTestAPI(t *testing.T, h *hooks) (*httptest.Server, string) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "cirrus.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	acc := &accounts.Service{T: db.Table(), ServerName: "test.local", BcryptCost: 4}
	a := &API{Cfg: Config{ServerName: "test.local"}, Accounts: acc}
	if h != nil {
		a.ProfileSync, a.RoomLeaver = h, h
	}
	routes := []httpapi.Route{
		{Method: "PUT", Path: "/profile/{userId}/{keyName}", Auth: httpapi.AuthRequired, Handle: a.SetProfileField},
		{Method: "DELETE", Path: "/profile/{userId}/{keyName}", Auth: httpapi.AuthRequired, Handle: a.DeleteProfileField},
		{Method: "POST", Path: "/deactivate", Auth: httpapi.AuthRequired, Handle: a.Deactivate},
	}
	srv := httptest.NewServer(httpapi.NewRouter(routes, httpapi.Options{Auth: acc}))
	t.Cleanup(srv.Close)
	sess, err := acc.Register(context.Background(), "@alice:test.local", "pw", false, false, accounts.LoginOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return srv, sess.AccessToken
}

func call(t *testing.T, srv *httptest.Server, method, path, tok, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

const deactivateBody = `{"auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"pw"}}`

func TestProfileSyncIsCalledOnNameAndAvatarChanges(t *testing.T) {
	h := &hooks{}
	srv, tok := newTestAPI(t, h)
	steps := []struct{ method, path, body string }{
		{"PUT", "/profile/@alice:test.local/displayname", `{"displayname":"Alice"}`},
		{"PUT", "/profile/@alice:test.local/displayname", `{"displayname":"Alice"}`}, // unchanged: no call
		{"PUT", "/profile/@alice:test.local/avatar_url", `{"avatar_url":"mxc://test.local/abc"}`},
		{"PUT", "/profile/@alice:test.local/m.tz", `{"m.tz":"UTC"}`}, // not in member events: no call
		{"DELETE", "/profile/@alice:test.local/displayname", ``},
	}
	for _, s := range steps {
		if st, body := call(t, srv, s.method, s.path, tok, s.body); st != 200 {
			t.Fatalf("%s %s: %d %s", s.method, s.path, st, body)
		}
	}
	want := []string{
		"@alice:test.local|Alice|",
		"@alice:test.local|Alice|mxc://test.local/abc",
		"@alice:test.local||mxc://test.local/abc",
	}
	if strings.Join(h.changes, "\n") != strings.Join(want, "\n") {
		t.Fatalf("ProfileChanged calls:\n%s\nwant:\n%s", strings.Join(h.changes, "\n"), strings.Join(want, "\n"))
	}
}

func TestDeactivateLeavesRoomsAndCanBeRetried(t *testing.T) {
	h := &hooks{fail: errors.New("rooms are down")}
	srv, tok := newTestAPI(t, h)
	if st, _ := call(t, srv, "POST", "/deactivate", tok, deactivateBody); st != 500 {
		t.Fatalf("deactivate with failing rooms: %d", st)
	}
	// The token still works, so the client can try again.
	h.fail = nil
	if st, body := call(t, srv, "POST", "/deactivate", tok, deactivateBody); st != 200 {
		t.Fatalf("retry: %d %s", st, body)
	}
	if len(h.leaves) != 2 || h.leaves[1] != "@alice:test.local" {
		t.Fatalf("LeaveAllRooms calls: %v", h.leaves)
	}
	if st, _ := call(t, srv, "POST", "/deactivate", tok, deactivateBody); st != 401 {
		t.Fatalf("token after deactivation: %d", st)
	}
}

func TestHooksAreOptional(t *testing.T) {
	srv, tok := newTestAPI(t, nil)
	if st, body := call(t, srv, "PUT", "/profile/@alice:test.local/displayname", tok, `{"displayname":"A"}`); st != 200 {
		t.Fatalf("set name without ProfileSync: %d %s", st, body)
	}
	if st, body := call(t, srv, "POST", "/deactivate", tok, deactivateBody); st != 200 {
		t.Fatalf("deactivate without RoomLeaver: %d %s", st, body)
	}
}
