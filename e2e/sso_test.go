package e2e

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"maunium.net/go/mautrix"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

// fakeOIDC is an OpenID Connect provider for tests: discovery, keys, and a
// token endpoint that checks the PKCE verifier and signs an RS256 ID token.
// The authorization step is the test itself (issueCode).
type fakeOIDC struct {
	srv      *httptest.Server
	key      *rsa.PrivateKey
	clientID string
	secret   string

	mu    sync.Mutex
	codes map[string]fakeGrant
}

// fakeGrant is what a code stands for: the request's PKCE challenge and
// redirect_uri, and the claims of the ID token to issue.
type fakeGrant struct {
	challenge, redirectURI string
	claims                 map[string]any
}

func newFakeOIDC(t *testing.T) *fakeOIDC {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeOIDC{key: key, clientID: "cirrus-client", secret: "s3cret", codes: map[string]fakeGrant{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		writeJSONResp(w, http.StatusOK, map[string]any{
			"issuer": f.srv.URL, "authorization_endpoint": f.srv.URL + "/authorize",
			"token_endpoint": f.srv.URL + "/token", "jwks_uri": f.srv.URL + "/jwks",
			"response_types_supported": []string{"code"}, "subject_types_supported": []string{"public"},
			"id_token_signing_alg_values_supported": []string{"RS256"},
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		writeJSONResp(w, http.StatusOK, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &f.key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	})
	mux.HandleFunc("POST /token", f.token)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func writeJSONResp(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeOIDC) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeJSONResp(w, 400, map[string]string{"error": "invalid_request"})
		return
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id != f.clientID || secret != f.secret {
		writeJSONResp(w, 401, map[string]string{"error": "invalid_client"})
		return
	}
	f.mu.Lock()
	g, ok := f.codes[r.PostForm.Get("code")]
	delete(f.codes, r.PostForm.Get("code"))
	f.mu.Unlock()
	sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
	if !ok || r.PostForm.Get("grant_type") != "authorization_code" || r.PostForm.Get("redirect_uri") != g.redirectURI ||
		base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge {
		writeJSONResp(w, 400, map[string]string{"error": "invalid_grant"})
		return
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: f.key, KeyID: "k1"}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		writeJSONResp(w, 500, map[string]string{"error": err.Error()})
		return
	}
	payload, _ := json.Marshal(g.claims)
	jws, err := signer.Sign(payload)
	if err != nil {
		writeJSONResp(w, 500, map[string]string{"error": err.Error()})
		return
	}
	idt, _ := jws.CompactSerialize()
	writeJSONResp(w, 200, map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 60, "id_token": idt})
}

// authorize plays the user signing in at the provider: it checks the
// authorization request the server sent the browser to and returns a code
// for an ID token with the given claims (over the defaults), and the state.
func (f *fakeOIDC) authorize(t *testing.T, location string, sub string, override map[string]any) (code, state string) {
	t.Helper()
	u, err := url.Parse(location)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if got := u.Scheme + "://" + u.Host + u.Path; got != f.srv.URL+"/authorize" {
		t.Fatalf("redirected to %s, want the provider's authorization endpoint", got)
	}
	for k, want := range map[string]string{"client_id": f.clientID, "response_type": "code", "code_challenge_method": "S256"} {
		if q.Get(k) != want {
			t.Fatalf("authorization request %s=%q, want %q (%s)", k, q.Get(k), want, location)
		}
	}
	if q.Get("state") == "" || q.Get("nonce") == "" || q.Get("code_challenge") == "" || !strings.Contains(q.Get("scope"), "openid") {
		t.Fatalf("authorization request lacks state, nonce, code_challenge or openid scope: %s", location)
	}
	now := time.Now()
	claims := map[string]any{"iss": f.srv.URL, "aud": f.clientID, "sub": sub, "nonce": q.Get("nonce"),
		"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "preferred_username": "Alice Smith", "name": "Alice S."}
	for k, v := range override {
		claims[k] = v
	}
	code = accountsToken()
	f.mu.Lock()
	f.codes[code] = fakeGrant{challenge: q.Get("code_challenge"), redirectURI: q.Get("redirect_uri"), claims: claims}
	f.mu.Unlock()
	return code, q.Get("state")
}

func accountsToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (f *fakeOIDC) providersVar(extra ...map[string]any) string {
	ps := []map[string]any{{"id": "fake", "name": "Fake IdP", "brand": "github", "icon": "mxc://cirrus.test/icon",
		"issuer": f.srv.URL, "client_id": f.clientID, "client_secret": f.secret}}
	ps = append(ps, extra...)
	b, _ := json.Marshal(ps)
	return string(b)
}

// noRedirect sends a GET without following redirects.
func noRedirect(t *testing.T, env *testenv.Env, path string) (int, http.Header, map[string]any) {
	t.Helper()
	c := *env.HTTP
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Get(env.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, resp.Header, body
}

const ssoClientRedirect = "https://client.example/after-sso?keep=1"

// ssoLogin runs redirect → provider → callback and returns the callback's
// answer.
func ssoLogin(t *testing.T, env *testenv.Env, f *fakeOIDC, path, sub string, override map[string]any) (int, http.Header, map[string]any) {
	t.Helper()
	st, h, body := noRedirect(t, env, path+"?redirectUrl="+url.QueryEscape(ssoClientRedirect))
	if st != http.StatusFound {
		t.Fatalf("redirect: %d %v", st, body)
	}
	code, state := f.authorize(t, h.Get("Location"), sub, override)
	return noRedirect(t, env, "/_matrix/client/v3/login/sso/callback?"+url.Values{"code": {code}, "state": {state}}.Encode())
}

// mustSSO runs a successful SSO login of sub and returns the callback's
// redirect headers.
func mustSSO(t *testing.T, env *testenv.Env, f *fakeOIDC, sub string) http.Header {
	t.Helper()
	st, h, body := ssoLogin(t, env, f, "/_matrix/client/v3/login/sso/redirect/fake", sub, nil)
	if st != http.StatusFound {
		t.Fatalf("SSO login of %s: %d %v", sub, st, body)
	}
	return h
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// loginWithSSOToken finishes an SSO login as the client does: the
// loginToken from the redirect back, in POST /login m.login.token.
func loginWithSSOToken(t *testing.T, env *testenv.Env, h http.Header) *mautrix.Client {
	t.Helper()
	u, err := url.Parse(h.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(u.String(), "https://client.example/after-sso?") || u.Query().Get("keep") != "1" {
		t.Fatalf("callback sent the browser to %s, want the client's redirectUrl", u)
	}
	lt := u.Query().Get("loginToken")
	if lt == "" {
		t.Fatalf("no loginToken in %s", u)
	}
	c := newClient(t, env)
	resp, err := c.Login(context.Background(), &mautrix.ReqLogin{Type: mautrix.AuthTypeToken, Token: lt, StoreCredentials: true})
	if err != nil {
		t.Fatalf("m.login.token with the SSO loginToken: %v", err)
	}
	if resp.AccessToken == "" {
		t.Fatal("no access token")
	}
	return c
}

func TestSSOLoginOIDC(t *testing.T) {
	f := newFakeOIDC(t)
	vars := map[string]string{"CIRRUS_OIDC_PROVIDERS": f.providersVar(), "CIRRUS_OIDC_ALLOW_PRIVATE": "true",
		"CIRRUS_OIDC_TRUSTED_CLIENTS": "https://client.example/"}
	forEachEngineWith(t, vars, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		// GET /login lists the provider and m.login.token.
		st, body, _ := do(t, env, http.MethodGet, "/_matrix/client/v3/login", "", "")
		if st != 200 {
			t.Fatalf("GET /login: %d", st)
		}
		var sso, tok map[string]any
		for _, fl := range body["flows"].([]any) {
			m := fl.(map[string]any)
			switch m["type"] {
			case "m.login.sso":
				sso = m
			case "m.login.token":
				tok = m
			}
		}
		if sso == nil || tok == nil {
			t.Fatalf("flows lack m.login.sso or m.login.token: %v", body)
		}
		idps, _ := sso["identity_providers"].([]any)
		if len(idps) != 1 {
			t.Fatalf("identity_providers = %v", sso["identity_providers"])
		}
		idp := idps[0].(map[string]any)
		if idp["id"] != "fake" || idp["name"] != "Fake IdP" || idp["brand"] != "github" || idp["icon"] != "mxc://cirrus.test/icon" {
			t.Fatalf("identity provider = %v", idp)
		}

		// The full flow, through /redirect/{idpId}.
		st, h, body := ssoLogin(t, env, f, "/_matrix/client/v3/login/sso/redirect/fake", "subject-1", nil)
		if st != http.StatusFound {
			t.Fatalf("callback: %d %v", st, body)
		}
		c := loginWithSSOToken(t, env, h)
		who, err := c.Whoami(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if who.UserID != "@alice_smith:cirrus.test" {
			t.Fatalf("whoami = %s, want the localpart from preferred_username", who.UserID)
		}
		if dn, err := c.GetDisplayName(ctx, who.UserID); err != nil || dn.DisplayName != "Alice S." {
			t.Fatalf("display name = %v, %v; want the name claim", dn, err)
		}

		// A second login of the same subject (through the single-provider
		// /redirect) is the same user; another subject with the same
		// preferred_username gets another localpart.
		st, h, body = ssoLogin(t, env, f, "/_matrix/client/v3/login/sso/redirect", "subject-1", map[string]any{"preferred_username": "renamed"})
		if st != http.StatusFound {
			t.Fatalf("second callback: %d %v", st, body)
		}
		if who2, err := loginWithSSOToken(t, env, h).Whoami(ctx); err != nil || who2.UserID != who.UserID {
			t.Fatalf("second login is %v (%v), want %s", who2, err, who.UserID)
		}
		st, h, body = ssoLogin(t, env, f, "/_matrix/client/v3/login/sso/redirect/fake", "subject-2", nil)
		if st != http.StatusFound {
			t.Fatalf("third callback: %d %v", st, body)
		}
		if who3, err := loginWithSSOToken(t, env, h).Whoami(ctx); err != nil || who3.UserID != "@alice_smith2:cirrus.test" {
			t.Fatalf("other subject is %v (%v), want @alice_smith2:cirrus.test", who3, err)
		}

		// A client not in CIRRUS_OIDC_TRUSTED_CLIENTS gets a page naming it
		// first, with the link (custom app schemes kept).
		for _, target := range []string{"https://other.example/cb", "im.app.test://login"} {
			st, h, body := noRedirect(t, env, "/_matrix/client/v3/login/sso/redirect/fake?redirectUrl="+url.QueryEscape(target))
			if st != http.StatusFound {
				t.Fatalf("redirect for %s: %d %v", target, st, body)
			}
			code, state := f.authorize(t, h.Get("Location"), "subject-1", nil)
			st, hdr, raw := sendRaw(t, env, http.MethodGet, "/_matrix/client/v3/login/sso/callback?"+url.Values{"code": {code}, "state": {state}}.Encode(), "", "")
			page := string(raw)
			if st != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") || !strings.Contains(page, `href="`+target+`?loginToken=`) {
				t.Fatalf("callback for untrusted %s: %d %s", target, st, page)
			}
		}

		// User-interactive auth with m.login.sso (the fallback page): the
		// SSO user, who has no password, deletes a device.
		other := loginWithSSOToken(t, env, mustSSO(t, env, f, "subject-1"))
		delPath := "/_matrix/client/v3/devices/" + url.PathEscape(string(other.DeviceID))
		st, body, _ = do(t, env, http.MethodDelete, delPath, c.AccessToken, `{}`)
		if st != 401 || !strings.Contains(mustJSON(t, body["flows"]), `"m.login.sso"`) {
			t.Fatalf("DELETE device without auth: %d %v, want 401 offering m.login.sso", st, body)
		}
		session := body["session"].(string)
		fb := "/_matrix/client/v3/auth/m.login.sso/fallback/web?session=" + url.QueryEscape(session)
		// Another provider account cannot vouch for this user.
		st, h, _ = noRedirect(t, env, fb)
		if st != http.StatusFound {
			t.Fatalf("fallback: %d", st)
		}
		code, state := f.authorize(t, h.Get("Location"), "subject-2", nil)
		if st, _, body := noRedirect(t, env, "/_matrix/client/v3/login/sso/callback?"+url.Values{"code": {code}, "state": {state}}.Encode()); st != 403 {
			t.Fatalf("fallback with another subject: %d %v, want 403", st, body)
		}
		if st, _, _ := do(t, env, http.MethodDelete, delPath, c.AccessToken, `{"auth":{"session":"`+session+`"}}`); st != 401 {
			t.Fatalf("DELETE device after a failed fallback: %d, want 401", st)
		}
		// The user's own provider account completes the stage.
		_, h, _ = noRedirect(t, env, fb)
		code, state = f.authorize(t, h.Get("Location"), "subject-1", nil)
		st, _, raw := sendRaw(t, env, http.MethodGet, "/_matrix/client/v3/login/sso/callback?"+url.Values{"code": {code}, "state": {state}}.Encode(), "", "")
		if st != 200 || !strings.Contains(string(raw), "authDone") {
			t.Fatalf("fallback callback: %d %s", st, raw)
		}
		if st, body, _ := do(t, env, http.MethodDelete, delPath, c.AccessToken, `{"auth":{"session":"`+session+`"}}`); st != 200 {
			t.Fatalf("DELETE device after the fallback: %d %v", st, body)
		}
		if _, err := other.Whoami(ctx); err == nil {
			t.Fatal("the deleted device's token still works")
		}
		if st, _, _ := noRedirect(t, env, "/_matrix/client/v3/auth/m.login.sso/fallback/web?session=nope"); st != 404 {
			t.Errorf("fallback with an unknown session: %d, want 404", st)
		}

		// ID tokens that must not log anyone in.
		for _, tc := range []struct {
			name     string
			override map[string]any
		}{
			{"bad nonce", map[string]any{"nonce": "not-the-flow-nonce"}},
			{"expired", map[string]any{"exp": time.Now().Add(-time.Hour).Unix(), "iat": time.Now().Add(-2 * time.Hour).Unix()}},
			{"wrong audience", map[string]any{"aud": "someone-else"}},
			{"wrong issuer", map[string]any{"iss": "https://evil.example"}},
		} {
			st, _, body := ssoLogin(t, env, f, "/_matrix/client/v3/login/sso/redirect/fake", "subject-x", tc.override)
			if st != http.StatusForbidden || body["errcode"] != "M_FORBIDDEN" {
				t.Errorf("%s: %d %v, want 403 M_FORBIDDEN", tc.name, st, body)
			}
		}

		// A state the server never issued, and one used twice.
		st, _, body = noRedirect(t, env, "/_matrix/client/v3/login/sso/callback?code=x&state=forged")
		if st != http.StatusForbidden || body["errcode"] != "M_FORBIDDEN" {
			t.Errorf("forged state: %d %v", st, body)
		}
		_, h, _ = noRedirect(t, env, "/_matrix/client/v3/login/sso/redirect/fake?redirectUrl="+url.QueryEscape(ssoClientRedirect))
		code, state = f.authorize(t, h.Get("Location"), "subject-1", nil)
		cb := "/_matrix/client/v3/login/sso/callback?" + url.Values{"code": {code}, "state": {state}}.Encode()
		if st, _, body := noRedirect(t, env, cb); st != http.StatusFound {
			t.Fatalf("callback: %d %v", st, body)
		}
		if st, _, body := noRedirect(t, env, cb); st != http.StatusForbidden || body["errcode"] != "M_FORBIDDEN" {
			t.Errorf("replayed state: %d %v", st, body)
		}
		// The provider's refusal.
		_, h, _ = noRedirect(t, env, "/_matrix/client/v3/login/sso/redirect/fake?redirectUrl="+url.QueryEscape(ssoClientRedirect))
		_, state = f.authorize(t, h.Get("Location"), "subject-1", nil)
		if st, _, body := noRedirect(t, env, "/_matrix/client/v3/login/sso/callback?error=access_denied&state="+url.QueryEscape(state)); st != http.StatusForbidden {
			t.Errorf("refused login: %d %v", st, body)
		}

		// Bad redirect requests.
		for _, tc := range []struct {
			path, code string
			status     int
		}{
			{"/_matrix/client/v3/login/sso/redirect", "M_MISSING_PARAM", 400},
			{"/_matrix/client/v3/login/sso/redirect?redirectUrl=" + url.QueryEscape("javascript:alert(1)"), "M_INVALID_PARAM", 400},
			{"/_matrix/client/v3/login/sso/redirect?redirectUrl=relative/path", "M_INVALID_PARAM", 400},
			{"/_matrix/client/v3/login/sso/redirect/nope?redirectUrl=" + url.QueryEscape(ssoClientRedirect), "M_NOT_FOUND", 404},
			{"/_matrix/client/v3/login/sso/callback?code=x", "M_MISSING_PARAM", 400},
		} {
			if st, _, body := noRedirect(t, env, tc.path); st != tc.status || body["errcode"] != tc.code {
				t.Errorf("GET %s: %d %v, want %d %s", tc.path, st, body, tc.status, tc.code)
			}
		}
	})
}

// TestSSOSeveralProviders: without an idpId and with several providers the
// redirect answers a page to pick one.
func TestSSOSeveralProviders(t *testing.T) {
	f := newFakeOIDC(t)
	vars := map[string]string{"CIRRUS_OIDC_ALLOW_PRIVATE": "true", "CIRRUS_OIDC_PROVIDERS": f.providersVar(map[string]any{
		"id": "other", "name": "Other IdP", "issuer": f.srv.URL, "client_id": f.clientID, "client_secret": f.secret})}
	env := testenv.Start(t, "embedded", vars)
	st, h, raw := sendRaw(t, env, http.MethodGet, "/_matrix/client/v3/login/sso/redirect?redirectUrl="+url.QueryEscape(ssoClientRedirect), "", "")
	if st != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		t.Fatalf("picker: %d %s", st, h.Get("Content-Type"))
	}
	for _, want := range []string{"redirect/fake?redirectUrl=", "redirect/other?redirectUrl=", "Other IdP"} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("picker page lacks %q:\n%s", want, raw)
		}
	}
}

// TestSSONotConfigured: without providers /login offers no m.login.sso and
// the SSO endpoints answer 404 M_NOT_FOUND (known endpoints, nothing to
// sign in with), and auth_metadata answers the spec's 404 M_UNRECOGNIZED
// for a server without the OAuth 2.0 API.
func TestSSONotConfigured(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		_, body, _ := do(t, env, http.MethodGet, "/_matrix/client/v3/login", "", "")
		for _, fl := range body["flows"].([]any) {
			if fl.(map[string]any)["type"] == "m.login.sso" {
				t.Fatalf("m.login.sso listed without providers: %v", body)
			}
		}
		for _, p := range []string{"/_matrix/client/v3/login/sso/redirect", "/_matrix/client/v3/login/sso/redirect/x", "/_matrix/client/v3/login/sso/callback"} {
			st, _, body := noRedirect(t, env, p+"?redirectUrl="+url.QueryEscape(ssoClientRedirect))
			if st != http.StatusNotFound || body["errcode"] != "M_NOT_FOUND" {
				t.Errorf("GET %s: %d %v, want 404 M_NOT_FOUND", p, st, body)
			}
		}
		st, body, _ := do(t, env, http.MethodGet, "/_matrix/client/v1/auth_metadata", "", "")
		if st != http.StatusNotFound || body["errcode"] != "M_UNRECOGNIZED" {
			t.Errorf("auth_metadata: %d %v, want 404 M_UNRECOGNIZED", st, body)
		}
	})
}
