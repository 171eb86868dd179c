package clientapi

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/core/accounts"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/infra/bolt"
)

// TestOpenIDTokenExpiry checks that an OpenID token identifies its user
// until its lifetime is over, and not after.
func TestOpenIDTokenExpiry(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "cirrus.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	now := time.Now()
	acc := &accounts.Service{T: db.Table(), ServerName: "test.local", BcryptCost: 4}
	a := &DiscoveryAPI{ServerName: "test.local", T: db.Table(), Now: func() time.Time { return now }}
	srv := httptest.NewServer(httpapi.NewRouter([]httpapi.Route{
		{Method: "POST", Path: "/user/{userId}/openid/request_token", Auth: httpapi.AuthRequired, Handle: a.RequestOpenIDToken},
		{Method: "GET", Path: "/userinfo", Handle: a.OpenIDUserInfo},
	}, httpapi.Options{Auth: acc}))
	t.Cleanup(srv.Close)
	sess, err := acc.Register(context.Background(), "@alice:test.local", "pw", false, false, accounts.LoginOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st, body := call(t, srv, "POST", "/user/@alice:test.local/openid/request_token", sess.AccessToken, "{}")
	var tok struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if st != 200 || json.Unmarshal([]byte(body), &tok) != nil || tok.AccessToken == "" || tok.ExpiresIn != 3600 {
		t.Fatalf("request_token: %d %s", st, body)
	}
	cases := []struct {
		name   string
		after  time.Duration
		status int
	}{
		{"fresh", 0, 200},
		{"just before expiry", OpenIDTokenLifetime - time.Second, 200},
		{"at expiry", OpenIDTokenLifetime, 401},
		{"long after", 2 * OpenIDTokenLifetime, 401},
	}
	start := now
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			now = start.Add(tc.after)
			st, body := call(t, srv, "GET", "/userinfo?access_token="+tok.AccessToken, "", "")
			if st != tc.status {
				t.Fatalf("userinfo: %d %s, want %d", st, body, tc.status)
			}
			if st == 200 && body != `{"sub":"@alice:test.local"}` {
				t.Fatalf("userinfo: %s", body)
			}
		})
	}
}
