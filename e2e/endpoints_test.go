package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

// endpointsFile is the spec's endpoint list (copied from the spec's
// data/api/client-server at v1.19): api, method, path, spec file, deprecated.
const endpointsFile = "testdata/endpoints-v1.19.tsv"

// notYetServed are client-server endpoints that later issues cover. Each
// entry is "METHOD path" exactly as the endpoint list spells the path. The
// list only shrinks: an endpoint that becomes served should leave it (the
// test logs stale entries rather than failing, so that work landing in
// parallel does not break it).
var notYetServed = map[string]string{
	// Pushers and notifications are being built in another issue (push rules
	// have landed).
	"GET /_matrix/client/v3/pushers":       "push",
	"POST /_matrix/client/v3/pushers/set":  "push",
	"GET /_matrix/client/v3/notifications": "push",
}

// unsupportedBySpec are endpoints of optional features Cirrus does not
// offer, for which the spec's own answer is 404 M_UNRECOGNIZED (so the
// walk cannot tell them from unknown paths). Each has a test asserting
// that answer (e2e/sso_test.go for auth_metadata).
var unsupportedBySpec = map[string]string{
	// No OAuth 2.0 authorization server (next-generation auth): clients
	// fall back to the legacy login API.
	"GET /_matrix/client/v1/auth_metadata": "oauth",
}

// specEndpoint is one line of the endpoint list.
type specEndpoint struct{ method, path string }

func (e specEndpoint) String() string { return e.method + " " + e.path }

// clientEndpoints reads the non-deprecated client-server endpoints.
func clientEndpoints(t *testing.T) []specEndpoint {
	t.Helper()
	f, err := os.Open(endpointsFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []specEndpoint
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		cols := strings.Split(sc.Text(), "\t")
		if len(cols) < 5 || cols[0] != "client-server" || strings.TrimSpace(cols[4]) == "yes" {
			continue
		}
		e := specEndpoint{strings.TrimSpace(cols[1]), strings.TrimSpace(cols[2])}
		if !seen[e.String()] {
			seen[e.String()] = true
			out = append(out, e)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) < 100 {
		t.Fatalf("only %d endpoints read from %s", len(out), endpointsFile)
	}
	return out
}

// fillPath substitutes plausible values for an endpoint's path parameters.
func fillPath(p string, vals map[string]string) string {
	for {
		i := strings.Index(p, "{")
		if i < 0 {
			return p
		}
		j := strings.Index(p[i:], "}")
		name := p[i+1 : i+j]
		v, ok := vals[name]
		if !ok {
			v = "x"
		}
		p = p[:i] + url.PathEscape(v) + p[i+j+1:]
	}
}

// TestEndpointsServed walks every non-deprecated client-server endpoint of
// the spec and fails on any the router does not know (404 or 405 with
// M_UNRECOGNIZED), listing all of them at once.
func TestEndpointsServed(t *testing.T) {
	env := testenv.Start(t, "embedded", nil)
	ctx := context.Background()
	alice := register(t, env, "walker", "pw")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "walk"})
	if err != nil {
		t.Fatal(err)
	}
	sent, err := alice.SendMessageEvent(ctx, room.RoomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "hi"})
	if err != nil {
		t.Fatal(err)
	}
	vals := map[string]string{
		"userId": string(alice.UserID), "roomId": string(room.RoomID), "roomIdOrAlias": string(room.RoomID),
		"roomAlias": "#walk-nope:cirrus.test", "eventId": string(sent.EventID), "deviceId": string(alice.DeviceID),
		"type": "m.walk", "filterId": "0", "txnId": "walk1", "eventType": "m.walk", "stateKey": "sk",
		"version": "1", "sessionId": "s", "kind": "override", "ruleId": ".m.rule.master", "protocol": "walk",
		"tag": "u.walk", "receiptType": "m.read", "relType": "m.annotation", "keyName": "m.walk",
		"serverName": "cirrus.test", "mediaId": "walk", "fileName": "f", "idpId": "walk",
		"appserviceId": "walk", "networkId": "walk",
	}
	var missing, stale []string
	for _, e := range clientEndpoints(t) {
		token, body := alice.AccessToken, ""
		if e.method == http.MethodPost || e.method == http.MethodPut {
			body = "{}"
		}
		// Logging out would end the walk's session: probe those anonymously
		// (still routed: 401, not 404).
		if strings.Contains(e.path, "/logout") {
			token = ""
		}
		st, _, raw := sendRaw(t, env, e.method, fillPath(e.path, vals), token, body)
		var resp struct {
			ErrCode string `json:"errcode"`
		}
		_ = json.Unmarshal(raw, &resp) // answers may be arrays or binary
		unknown := (st == http.StatusNotFound || st == http.StatusMethodNotAllowed) && resp.ErrCode == "M_UNRECOGNIZED"
		_, allowed := notYetServed[e.String()]
		if _, ok := unsupportedBySpec[e.String()]; ok {
			continue
		}
		switch {
		case unknown && !allowed:
			missing = append(missing, e.String())
		case !unknown && allowed:
			stale = append(stale, e.String())
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("%d endpoints of the spec are not served:\n  %s", len(missing), strings.Join(missing, "\n  "))
	}
	if len(stale) > 0 {
		t.Logf("served now, remove from notYetServed:\n  %s", strings.Join(stale, "\n  "))
	}
}
