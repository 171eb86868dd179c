package clientapi

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/accounts"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
)

// SSOCallbackPath is where identity providers send the browser back to
// after the user signed in (the OAuth 2.0 redirect_uri, under the client
// API's prefix so that a proxy forwarding only /_matrix reaches it).
const SSOCallbackPath = "/_matrix/client/v3/login/sso/callback"

// SSOProvider is one OpenID Connect identity provider users may sign in
// with (CIRRUS_OIDC_PROVIDERS).
type SSOProvider struct {
	// ID, Name, Icon (an mxc:// URI) and Brand are what GET /login shows
	// clients in identity_providers.
	ID    string `json:"id"`
	Name  string `json:"name"`
	Icon  string `json:"icon,omitempty"`
	Brand string `json:"brand,omitempty"`
	// Issuer is the provider's issuer URL; its
	// /.well-known/openid-configuration is read for the endpoints and keys.
	Issuer       string   `json:"issuer"`
	ClientID     string   `json:"client_id"`
	ClientSecret string   `json:"client_secret"`
	Scopes       []string `json:"scopes,omitempty"`
	// LocalpartClaim names the ID token claim a new user's localpart is
	// made from (preferred_username if empty; then email; then generated).
	LocalpartClaim string `json:"localpart_claim,omitempty"`
	// DisplayNameClaim names the claim for a new user's display name
	// (name if empty).
	DisplayNameClaim string `json:"displayname_claim,omitempty"`
}

// SSOAPI serves login through OpenID Connect identity providers: the
// redirect to a provider (authorization code flow with PKCE, state and
// nonce), the provider's callback, and the identity_providers of GET
// /login. Everything a flow needs between redirect and callback is in a
// table item (accounts.SSOSession), so any process can finish it.
type SSOAPI struct {
	Providers []SSOProvider
	// CallbackURL is the absolute URL of SSOCallbackPath on this server.
	CallbackURL string
	// TrustedClients are URL prefixes of clients whose redirectUrl gets the
	// login token straight away. Any other redirectUrl gets a page first
	// that names where the login goes and asks the user to continue: a
	// crafted link cannot silently hand someone's login to another site.
	TrustedClients []string
	Accounts       *accounts.Service
	// Reserved, if set, reports user IDs that new SSO accounts must not
	// take (application services' exclusive namespaces).
	Reserved func(id.UserID) bool
	// HTTP reaches the providers (discovery, keys, token endpoint): a
	// netguard client, so provider URLs cannot point at internal networks
	// unless the deployment allows it.
	HTTP *http.Client

	mu        sync.Mutex
	discovery map[string]*oidc.Provider // per process cache of discovery documents
}

// Configured reports whether any identity provider is set up.
func (a *SSOAPI) Configured() bool { return a != nil && len(a.Providers) > 0 }

// IdentityProviders is the identity_providers list of the m.login.sso flow.
func (a *SSOAPI) IdentityProviders() []map[string]string {
	out := make([]map[string]string, 0, len(a.Providers))
	for _, p := range a.Providers {
		m := map[string]string{"id": p.ID, "name": p.Name}
		if p.Icon != "" {
			m["icon"] = p.Icon
		}
		if p.Brand != "" {
			m["brand"] = p.Brand
		}
		out = append(out, m)
	}
	return out
}

func (a *SSOAPI) provider(idp string) *SSOProvider {
	if a == nil {
		return nil
	}
	for i := range a.Providers {
		if a.Providers[i].ID == idp {
			return &a.Providers[i]
		}
	}
	return nil
}

// clientCtx makes go-oidc and x/oauth2 use the guarded HTTP client.
func (a *SSOAPI) clientCtx(ctx context.Context) context.Context {
	if a.HTTP == nil {
		return ctx
	}
	return oidc.ClientContext(context.WithValue(ctx, oauth2.HTTPClient, a.HTTP), a.HTTP)
}

// oidcProvider reads (once per process) the provider's discovery document.
func (a *SSOAPI) oidcProvider(p *SSOProvider) (*oidc.Provider, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if op := a.discovery[p.ID]; op != nil {
		return op, nil
	}
	// Not the request's context: go-oidc keeps this one for fetching the
	// provider's keys later, after the request has ended.
	op, err := oidc.NewProvider(a.clientCtx(context.Background()), p.Issuer)
	if err != nil {
		return nil, &httpapi.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN",
			Message: fmt.Sprintf("identity provider %q is unreachable or misconfigured", p.ID)}
	}
	if a.discovery == nil {
		a.discovery = map[string]*oidc.Provider{}
	}
	a.discovery[p.ID] = op
	return op, nil
}

func (a *SSOAPI) oauthConfig(p *SSOProvider, op *oidc.Provider) *oauth2.Config {
	scopes := p.Scopes
	if len(scopes) == 0 {
		scopes = []string{oidc.ScopeOpenID, "profile", "email"}
	}
	return &oauth2.Config{ClientID: p.ClientID, ClientSecret: p.ClientSecret, Endpoint: op.Endpoint(),
		RedirectURL: a.CallbackURL, Scopes: scopes}
}

// validClientRedirect accepts the absolute URL a client wants the login
// token sent to: any scheme (mobile clients use their own) except those a
// browser would run or render as a document.
func validClientRedirect(s string) (*url.URL, error) {
	if s == "" {
		return nil, httpapi.MissingParam("redirectUrl is required")
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || (u.Host == "" && u.Opaque == "" && u.Path == "") {
		return nil, httpapi.InvalidParam("redirectUrl must be an absolute URL")
	}
	switch strings.ToLower(u.Scheme) {
	case "javascript", "data", "vbscript", "file", "blob":
		return nil, httpapi.InvalidParam("redirectUrl scheme %q is not allowed", u.Scheme)
	}
	return u, nil
}

func randomString() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Redirect serves GET /login/sso/redirect and /login/sso/redirect/{idpId}:
// it remembers the flow and sends the browser to the provider. Without an
// idpId and with several providers it answers a page to pick one.
func (a *SSOAPI) Redirect(w http.ResponseWriter, r *httpapi.Request) {
	if err := a.redirect(w, r); err != nil {
		httpapi.WriteError(w, err)
	}
}

var pickProviderPage = template.Must(template.New("pick").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Sign in</title></head>
<body><h1>Sign in with</h1><ul>
{{range .}}<li><a href="{{.URL}}">{{.Name}}</a></li>
{{end}}</ul></body></html>
`))

func (a *SSOAPI) redirect(w http.ResponseWriter, r *httpapi.Request) error {
	idp := r.PathValue("idpId")
	if !a.Configured() {
		return httpapi.NotFound("SSO login is not configured on this server")
	}
	target, err := validClientRedirect(r.URL.Query().Get("redirectUrl"))
	if err != nil {
		return err
	}
	if act := r.URL.Query().Get("action"); act != "" && act != "login" && act != "register" {
		return httpapi.InvalidParam("action must be login or register")
	}
	if idp == "" {
		if len(a.Providers) > 1 {
			return a.pickProvider(w, func(id string) string {
				return "redirect/" + url.PathEscape(id) + "?" + url.Values{"redirectUrl": {target.String()}}.Encode()
			})
		}
		idp = a.Providers[0].ID
	}
	return a.startFlow(w, r, idp, accounts.SSOSession{RedirectURL: target.String()})
}

// startFlow remembers a flow (sess, completed with the provider, nonce and
// PKCE verifier) under a fresh state and sends the browser to provider idp.
func (a *SSOAPI) startFlow(w http.ResponseWriter, r *httpapi.Request, idp string, sess accounts.SSOSession) error {
	p := a.provider(idp)
	if p == nil {
		return httpapi.NotFound("unknown identity provider %q", idp)
	}
	op, err := a.oidcProvider(p)
	if err != nil {
		return err
	}
	state := randomString()
	sess.Provider, sess.Nonce, sess.Verifier = p.ID, randomString(), oauth2.GenerateVerifier()
	if err := a.Accounts.PutSSOSession(r.Ctx(), state, sess); err != nil {
		return err
	}
	loc := a.oauthConfig(p, op).AuthCodeURL(state, oidc.Nonce(sess.Nonce), oauth2.S256ChallengeOption(sess.Verifier))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r.Request, loc, http.StatusFound)
	return nil
}

// pickProvider writes the page to choose a provider: links to link(id).
func (a *SSOAPI) pickProvider(w http.ResponseWriter, link func(id string) string) error {
	type choice struct{ Name, URL string }
	var cs []choice
	for _, p := range a.Providers {
		cs = append(cs, choice{p.Name, link(p.ID)})
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	return pickProviderPage.Execute(w, cs)
}

// UIAFallback serves GET /_matrix/client/v3/auth/m.login.sso/fallback/web
// (spec "Fallback" of user-interactive auth): it sends the browser to the
// identity provider (?idp= picks one when there are several) and, back at
// the callback, marks the m.login.sso stage of the session done if the
// provider's account is the one mapped to the session's user.
func (a *SSOAPI) UIAFallback(w http.ResponseWriter, r *httpapi.Request) {
	if err := a.uiaFallback(w, r); err != nil {
		httpapi.WriteError(w, err)
	}
}

func (a *SSOAPI) uiaFallback(w http.ResponseWriter, r *httpapi.Request) error {
	if !a.Configured() {
		return httpapi.NotFound("SSO login is not configured on this server")
	}
	session := r.URL.Query().Get("session")
	if session == "" {
		return httpapi.MissingParam("session is required")
	}
	user, err := a.Accounts.UIASessionUser(r.Ctx(), session)
	if err != nil {
		return err
	}
	idp := r.URL.Query().Get("idp")
	if idp == "" {
		if len(a.Providers) > 1 {
			return a.pickProvider(w, func(id string) string {
				return "web?" + url.Values{"session": {session}, "idp": {id}}.Encode()
			})
		}
		idp = a.Providers[0].ID
	}
	return a.startFlow(w, r, idp, accounts.SSOSession{UIASession: session, UIAUser: user})
}

// uiaDonePage tells the client the stage is done, the ways the spec's
// fallback asks for: window.onAuthDone, and an "authDone" message to the
// window that opened this one.
var uiaDonePage = template.Must(template.New("done").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Authentication complete</title>
<script>
if (window.onAuthDone) { window.onAuthDone(); }
else if (window.opener && window.opener.postMessage) { window.opener.postMessage("authDone", "*"); }
</script></head>
<body><p>Thank you. You may now close this window and continue in your client.</p></body></html>
`))

// Callback serves GET SSOCallbackPath: it redeems the provider's code,
// checks the ID token (signature from the provider's keys, issuer,
// audience, expiry, and the flow's nonce), maps the subject to a Matrix
// user (creating it on the first login) and sends the browser back to the
// client with a single-use loginToken for m.login.token.
func (a *SSOAPI) Callback(w http.ResponseWriter, r *httpapi.Request) {
	loc, err := a.callback(r)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	if loc == "" { // a user-interactive auth stage, done
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = uiaDonePage.Execute(w, nil)
		return
	}
	if a.trusted(loc) {
		http.Redirect(w, r.Request, loc, http.StatusFound)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	host := loc
	if u, err := url.Parse(loc); err == nil && u.Host != "" {
		host = u.Host
	}
	// The URL was checked by validClientRedirect (no script schemes);
	// template.URL keeps custom app schemes that html/template would blank.
	_ = confirmPage.Execute(w, map[string]any{"Host": host, "URL": template.URL(loc)})
}

func (a *SSOAPI) trusted(loc string) bool {
	for _, p := range a.TrustedClients {
		if p != "" && strings.HasPrefix(loc, p) {
			return true
		}
	}
	return false
}

var confirmPage = template.Must(template.New("confirm").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Continue to your client</title></head>
<body><p>You are signing in to <strong>{{.Host}}</strong>.
If you did not start this login there, close this page.</p>
<p><a href="{{.URL}}">Continue to {{.Host}}</a></p></body></html>
`))

// callback returns where to send the browser, or "" when the flow
// completed a user-interactive auth stage.
func (a *SSOAPI) callback(r *httpapi.Request) (string, error) {
	if !a.Configured() {
		return "", httpapi.NotFound("SSO login is not configured on this server")
	}
	q := r.URL.Query()
	state := q.Get("state")
	if state == "" {
		return "", httpapi.MissingParam("state is required")
	}
	ctx := r.Ctx()
	sess, err := a.Accounts.TakeSSOSession(ctx, state)
	if err != nil {
		return "", err
	}
	if e := q.Get("error"); e != "" {
		return "", httpapi.Forbidden("the identity provider refused the login: %s", e)
	}
	code := q.Get("code")
	if code == "" {
		return "", httpapi.MissingParam("code is required")
	}
	p := a.provider(sess.Provider)
	if p == nil {
		return "", httpapi.Forbidden("identity provider %q is no longer configured", sess.Provider)
	}
	op, err := a.oidcProvider(p)
	if err != nil {
		return "", err
	}
	tok, err := a.oauthConfig(p, op).Exchange(a.clientCtx(ctx), code, oauth2.VerifierOption(sess.Verifier))
	if err != nil {
		return "", httpapi.Forbidden("the identity provider did not accept the authorization code")
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return "", httpapi.Forbidden("the identity provider returned no ID token")
	}
	idt, err := op.Verifier(&oidc.Config{ClientID: p.ClientID}).Verify(a.clientCtx(ctx), raw)
	if err != nil {
		return "", httpapi.Forbidden("invalid ID token: %v", err)
	}
	if idt.Nonce == "" || idt.Nonce != sess.Nonce {
		return "", httpapi.Forbidden("invalid ID token: nonce mismatch")
	}
	if idt.Subject == "" {
		return "", httpapi.Forbidden("invalid ID token: no subject")
	}
	if sess.UIASession != "" {
		// Re-authentication: the provider's account must already be the
		// session user's; nobody is created or logged in.
		uid, err := a.Accounts.SSOUser(ctx, p.ID, idt.Subject)
		if err != nil {
			return "", err
		}
		if uid == "" || uid != sess.UIAUser {
			return "", httpapi.Forbidden("this %s account is not the one of %s", p.Name, sess.UIAUser)
		}
		return "", a.Accounts.CompleteUIAStage(ctx, sess.UIASession, uid, accounts.StageSSO)
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return "", httpapi.Forbidden("invalid ID token claims")
	}
	str := func(name string) string { s, _ := claims[name].(string); return s }
	lpClaim, dnClaim := p.LocalpartClaim, p.DisplayNameClaim
	if lpClaim == "" {
		lpClaim = "preferred_username"
	}
	if dnClaim == "" {
		dnClaim = "name"
	}
	hint := str(lpClaim)
	if accounts.SSOLocalpart(hint) == "" {
		hint = str("email")
	}
	uid, err := a.Accounts.ProvisionSSOUser(ctx, p.ID, idt.Subject, hint, str(dnClaim), a.Reserved)
	if err != nil {
		return "", err
	}
	lt, err := a.Accounts.CreateLoginToken(ctx, uid, accounts.LoginTokenLifetime)
	if err != nil {
		return "", err
	}
	target, err := url.Parse(sess.RedirectURL)
	if err != nil {
		return "", httpapi.InvalidParam("stored redirectUrl is invalid")
	}
	tq := target.Query()
	tq.Set("loginToken", lt)
	target.RawQuery = tq.Encode()
	return target.String(), nil
}

// AuthMetadata serves GET /_matrix/client/v1/auth_metadata. Cirrus has no
// OAuth 2.0 authorization server (next-generation auth), and for that case
// the spec's answer is 404 M_UNRECOGNIZED: clients then use the legacy
// login API (GET /login).
func AuthMetadata(r *httpapi.Request) (any, error) {
	return nil, httpapi.Unrecognized("this server does not support the OAuth 2.0 API")
}
