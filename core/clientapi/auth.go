package clientapi

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/accounts"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
)

type registerRequest struct {
	// Type is m.login.application_service for an application service's
	// registration (the spec puts it beside the other fields, not in auth).
	Type                     string             `json:"type"`
	Username                 string             `json:"username"`
	Password                 string             `json:"password"`
	DeviceID                 id.DeviceID        `json:"device_id"`
	InitialDeviceDisplayName string             `json:"initial_device_display_name"`
	InhibitLogin             bool               `json:"inhibit_login"`
	RefreshToken             bool               `json:"refresh_token"`
	Auth                     *accounts.AuthDict `json:"auth"`
}

type loginResponse struct {
	UserID       id.UserID   `json:"user_id"`
	AccessToken  string      `json:"access_token,omitempty"`
	DeviceID     id.DeviceID `json:"device_id,omitempty"`
	HomeServer   string      `json:"home_server,omitempty"`
	ExpiresInMS  int64       `json:"expires_in_ms,omitempty"`
	RefreshToken string      `json:"refresh_token,omitempty"`
	WellKnown    any         `json:"well_known,omitempty"`
}

func (a *API) sessionResponse(s *accounts.Session) loginResponse {
	return loginResponse{UserID: s.UserID, AccessToken: s.AccessToken, DeviceID: s.DeviceID,
		HomeServer: a.Cfg.ServerName, ExpiresInMS: s.ExpiresInMS, RefreshToken: s.RefreshToken,
		WellKnown: map[string]any{"m.homeserver": map[string]string{"base_url": a.Cfg.PublicBaseURL}}}
}

// Register serves POST /_matrix/client/v3/register.
func (a *API) Register(r *httpapi.Request) (any, error) {
	kind := r.URL.Query().Get("kind")
	if kind == "" {
		kind = "user"
	}
	if kind != "user" && kind != "guest" {
		return nil, httpapi.InvalidParam("kind must be 'user' or 'guest'")
	}
	var req registerRequest
	if err := r.DecodeOptionalJSON(&req); err != nil {
		return nil, err
	}
	if req.DeviceID != "" && !validDeviceID(req.DeviceID) {
		return nil, httpapi.InvalidParam("invalid device_id")
	}
	if req.Type == LoginTypeAppService || (req.Auth != nil && req.Auth.Type == LoginTypeAppService) {
		return a.registerAppService(r, req) // appservice.go
	}
	ctx := r.Ctx()
	if kind == "guest" {
		if !a.Cfg.GuestAccess {
			return nil, httpapi.Forbidden("guest access is disabled on this server")
		}
		// Guests get a generated numeric name and no password (spec 'Guest access').
		return a.registerGenerated(ctx, "", true, req, httpapi.ClientIP(r.Request))
	}
	if a.Cfg.Registration == RegistrationClosed {
		return nil, httpapi.Forbidden("registration is disabled on this server")
	}
	var uid id.UserID
	if req.Username != "" {
		var err error
		if uid, err = a.Accounts.UserID(req.Username); err != nil {
			return nil, err
		}
		if err := a.AppServices.exclusiveUser(uid, ""); err != nil {
			return nil, err
		}
		ok, err := a.Accounts.Available(ctx, uid)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, httpapi.UserInUse("user ID already taken")
		}
	}
	if req.Auth == nil && req.Password == "" && req.Username == "" {
		// A first probe: answer with the flows. Fall through to UIA.
	} else if req.Password == "" {
		return nil, httpapi.MissingParam("password is required")
	} else if len(req.Password) > 512 {
		return nil, httpapi.InvalidParam("password is too long")
	}
	done, challenge, err := a.Accounts.RunUIA(ctx, a.registrationUIA(), req.Auth)
	if err != nil {
		return nil, err
	}
	if !done {
		return challenge, nil
	}
	if req.Password == "" {
		return nil, httpapi.MissingParam("password is required")
	}
	if uid == "" {
		return a.registerGenerated(ctx, req.Password, false, req, httpapi.ClientIP(r.Request))
	}
	s, err := a.Accounts.Register(ctx, uid, req.Password, false, req.InhibitLogin, a.loginOptions(req.DeviceID, req.InitialDeviceDisplayName, httpapi.ClientIP(r.Request), req.RefreshToken))
	if err != nil {
		return nil, err
	}
	return a.sessionResponse(s), nil
}

// registerGenerated registers under a random numeric localpart, retrying on
// the (unlikely) collision.
func (a *API) registerGenerated(ctx context.Context, password string, guest bool, req registerRequest, ip string) (any, error) {
	for range 5 {
		uid := id.NewUserID(fmt.Sprintf("%d", 100000000+rand.Int64N(900000000)), a.Cfg.ServerName)
		s, err := a.Accounts.Register(ctx, uid, password, guest, req.InhibitLogin && !guest, a.loginOptions(req.DeviceID, req.InitialDeviceDisplayName, ip, req.RefreshToken))
		if he, ok := err.(*httpapi.Error); ok && he.Code == "M_USER_IN_USE" {
			continue
		}
		if err != nil {
			return nil, err
		}
		return a.sessionResponse(s), nil
	}
	return nil, httpapi.Unknown("could not allocate a user ID")
}

func (a *API) loginOptions(dev id.DeviceID, name, ip string, refresh bool) accounts.LoginOptions {
	lo := accounts.LoginOptions{DeviceID: dev, DisplayName: name, IP: ip}
	if refresh && a.Cfg.RefreshTokenLifetime > 0 {
		lo.TokenLifetime = a.Cfg.RefreshTokenLifetime
	}
	return lo
}

func (a *API) registrationUIA() accounts.UIA {
	u := accounts.UIA{Purpose: "register", Check: a.checkRegistrationStage}
	if a.Cfg.Registration == RegistrationToken {
		u.Flows = []accounts.Flow{{"m.login.registration_token"}}
	} else {
		u.Flows = []accounts.Flow{{"m.login.dummy"}}
	}
	return u
}

func (a *API) checkRegistrationStage(ctx context.Context, stage string, auth *accounts.AuthDict) error {
	switch stage {
	case "m.login.dummy":
		return nil
	case "m.login.registration_token":
		var body struct {
			Token string `json:"token"`
		}
		_ = json.Unmarshal(auth.Raw, &body)
		if !a.validRegistrationToken(body.Token) {
			return httpapi.Unauthorized("invalid registration token")
		}
		return nil
	}
	return httpapi.BadRequest("unsupported stage %q", stage)
}

func (a *API) validRegistrationToken(tok string) bool {
	if a.Cfg.Registration != RegistrationToken || tok == "" {
		return false
	}
	ok := false
	for _, t := range a.Cfg.RegistrationTokens {
		if subtle.ConstantTimeCompare([]byte(t), []byte(tok)) == 1 {
			ok = true
		}
	}
	return ok
}

// RegistrationTokenValidity serves GET /_matrix/client/v1/register/m.login.registration_token/validity.
func (a *API) RegistrationTokenValidity(r *httpapi.Request) (any, error) {
	tok := r.URL.Query().Get("token")
	if tok == "" {
		return nil, httpapi.MissingParam("token is required")
	}
	if a.Cfg.Registration != RegistrationToken {
		return nil, httpapi.Forbidden("registration tokens are not in use on this server")
	}
	return map[string]bool{"valid": a.validRegistrationToken(tok)}, nil
}

// RegisterAvailable serves GET /_matrix/client/v3/register/available.
func (a *API) RegisterAvailable(r *httpapi.Request) (any, error) {
	name := r.URL.Query().Get("username")
	if name == "" {
		return nil, httpapi.MissingParam("username is required")
	}
	uid, err := a.Accounts.UserID(name)
	if err != nil {
		return nil, err
	}
	if err := a.AppServices.exclusiveUser(uid, ""); err != nil {
		return nil, err
	}
	ok, err := a.Accounts.Available(r.Ctx(), uid)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, httpapi.UserInUse("user ID already taken")
	}
	return map[string]bool{"available": true}, nil
}

// LoginFlows serves GET /_matrix/client/v3/login. The m.login.token flow
// says get_login_token: true because POST /login/get_token is served.
func (a *API) LoginFlows(r *httpapi.Request) (any, error) {
	flows := []map[string]any{
		{"type": "m.login.password"},
		{"type": "m.login.token", "get_login_token": true},
	}
	if a.AppServices.configured() {
		flows = append(flows, map[string]any{"type": LoginTypeAppService})
	}
	if a.SSO.Configured() { // sso.go
		flows = append(flows, map[string]any{"type": "m.login.sso", "identity_providers": a.SSO.IdentityProviders()})
	}
	return map[string]any{"flows": flows}, nil
}

type loginRequest struct {
	Type       string `json:"type"`
	Identifier *struct {
		Type string `json:"type"`
		User string `json:"user"`
	} `json:"identifier"`
	User                     string      `json:"user"`
	Password                 string      `json:"password"`
	Token                    string      `json:"token"`
	DeviceID                 id.DeviceID `json:"device_id"`
	InitialDeviceDisplayName string      `json:"initial_device_display_name"`
	RefreshToken             bool        `json:"refresh_token"`
}

// Login serves POST /_matrix/client/v3/login.
func (a *API) Login(r *httpapi.Request) (any, error) {
	var req loginRequest
	if err := r.DecodeJSON(&req); err != nil {
		return nil, err
	}
	if req.Type == "" {
		return nil, httpapi.MissingParam("type is required")
	}
	switch req.Type {
	case "m.login.password":
	case "m.login.token":
		return a.loginWithToken(r, &req)
	case LoginTypeAppService:
		return a.loginAppService(r, &req) // appservice.go
	default:
		return nil, httpapi.BadRequest("unsupported login type %q", req.Type)
	}
	user := req.User
	if req.Identifier != nil {
		if req.Identifier.Type != "m.id.user" {
			return nil, httpapi.BadRequest("unsupported identifier type %q", req.Identifier.Type)
		}
		user = req.Identifier.User
	}
	if user == "" {
		return nil, httpapi.MissingParam("identifier.user is required")
	}
	if req.Password == "" {
		return nil, httpapi.MissingParam("password is required")
	}
	if req.DeviceID != "" && !validDeviceID(req.DeviceID) {
		return nil, httpapi.InvalidParam("invalid device_id")
	}
	uid, err := a.Accounts.ResolveUser(user)
	if err != nil {
		return nil, err
	}
	acct, err := a.Accounts.CheckPassword(r.Ctx(), uid, req.Password)
	if err != nil {
		return nil, err
	}
	s, err := a.Accounts.Login(r.Ctx(), uid, acct.Guest, a.loginOptions(req.DeviceID, req.InitialDeviceDisplayName, httpapi.ClientIP(r.Request), req.RefreshToken))
	if err != nil {
		return nil, err
	}
	return a.sessionResponse(s), nil
}

// loginWithToken is the m.login.token login: the token (from
// /login/get_token) names the user and is spent by this login; a token that
// is unknown, expired or spent is 403 M_FORBIDDEN, as the spec asks.
func (a *API) loginWithToken(r *httpapi.Request, req *loginRequest) (any, error) {
	if req.Token == "" {
		return nil, httpapi.MissingParam("token is required")
	}
	if req.DeviceID != "" && !validDeviceID(req.DeviceID) {
		return nil, httpapi.InvalidParam("invalid device_id")
	}
	ctx := r.Ctx()
	uid, err := a.Accounts.ConsumeLoginToken(ctx, req.Token)
	if err != nil {
		return nil, err
	}
	acct, err := a.Accounts.GetAccount(ctx, uid)
	if err != nil {
		if _, ok := err.(*httpapi.Error); ok {
			return nil, httpapi.Forbidden("invalid or expired login token")
		}
		return nil, err
	}
	if acct.Deactivated {
		return nil, httpapi.UserDeactivated("this account has been deactivated")
	}
	s, err := a.Accounts.Login(ctx, uid, acct.Guest, a.loginOptions(req.DeviceID, req.InitialDeviceDisplayName, httpapi.ClientIP(r.Request), req.RefreshToken))
	if err != nil {
		return nil, err
	}
	return a.sessionResponse(s), nil
}

// Logout serves POST /_matrix/client/v3/logout: the token and its device go.
func (a *API) Logout(r *httpapi.Request) (any, error) {
	if err := a.Accounts.DeleteDevice(r.Ctx(), r.Caller.UserID, r.Caller.DeviceID); err != nil {
		return nil, err
	}
	if err := a.dropDeviceKeys(r.Ctx(), r.Caller.UserID, r.Caller.DeviceID); err != nil {
		return nil, err
	}
	return httpapi.Empty{}, nil
}

// LogoutAll serves POST /_matrix/client/v3/logout/all.
func (a *API) LogoutAll(r *httpapi.Request) (any, error) {
	if err := a.Accounts.DeleteAllDevices(r.Ctx(), r.Caller.UserID, ""); err != nil {
		return nil, err
	}
	if err := a.dropAllDeviceKeys(r.Ctx(), r.Caller.UserID, ""); err != nil {
		return nil, err
	}
	return httpapi.Empty{}, nil
}

// WhoAmI serves GET /_matrix/client/v3/account/whoami.
func (a *API) WhoAmI(r *httpapi.Request) (any, error) {
	return map[string]any{"user_id": r.Caller.UserID, "device_id": r.Caller.DeviceID, "is_guest": r.Caller.IsGuest}, nil
}

// Refresh serves POST /_matrix/client/v3/refresh.
func (a *API) Refresh(r *httpapi.Request) (any, error) {
	var req struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := r.DecodeJSON(&req); err != nil {
		return nil, err
	}
	if req.RefreshToken == "" {
		return nil, httpapi.MissingParam("refresh_token is required")
	}
	s, err := a.Accounts.Refresh(r.Ctx(), req.RefreshToken, a.Cfg.RefreshTokenLifetime)
	if err != nil {
		return nil, err
	}
	return map[string]any{"access_token": s.AccessToken, "refresh_token": s.RefreshToken, "expires_in_ms": s.ExpiresInMS}, nil
}

// validDeviceID accepts printable ASCII without spaces, up to 255 bytes.
func validDeviceID(d id.DeviceID) bool {
	s := string(d)
	if len(s) == 0 || len(s) > 255 {
		return false
	}
	return !strings.ContainsFunc(s, func(c rune) bool { return c <= ' ' || c > '~' })
}
