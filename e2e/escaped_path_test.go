package e2e

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

// TestEscapedSlashInPathSegment: ids may contain "/" (device ids made of
// base64 keys), which clients escape as %2F. The segment must reach the
// handler whole on every engine — on Lambda too, where the path arrives
// through API Gateway's raw path.
func TestEscapedSlashInPathSegment(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		c := register(t, env, "slashy", "pw-slashy-1")
		const dev = "KEY/with+slash="
		st, body := doJSON(t, env, http.MethodPost, "/_matrix/client/v3/login", "", map[string]any{
			"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": "slashy"},
			"password": "pw-slashy-1", "device_id": dev})
		if st != http.StatusOK || body["device_id"] != dev {
			t.Fatalf("login with device id %q: %d %v", dev, st, body)
		}
		path := "/_matrix/client/v3/devices/" + url.PathEscape(dev)
		st, body = doJSON(t, env, http.MethodGet, path, c.AccessToken, nil)
		if st != http.StatusOK || body["device_id"] != dev {
			t.Fatalf("GET %s: %d %v", path, st, body)
		}
		st, body = doJSON(t, env, http.MethodPut, path, c.AccessToken, map[string]string{"display_name": "renamed"})
		if st != http.StatusOK {
			t.Fatalf("PUT %s: %d %v", path, st, body)
		}
		st, body = doJSON(t, env, http.MethodGet, path, c.AccessToken, nil)
		if st != http.StatusOK || body["display_name"] != "renamed" {
			t.Fatalf("GET after rename %s: %d %v", path, st, body)
		}
	})
}
