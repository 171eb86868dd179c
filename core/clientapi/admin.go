package clientapi

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"unicode/utf8"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/accounts"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
)

// Shared-secret registration, compatible with Synapse's admin API
// (/_synapse/admin/v1/register), so its register_new_matrix_user tool and
// other provisioning scripts work against Cirrus. It is off unless
// CIRRUS_REGISTRATION_SHARED_SECRET is set, and works whatever
// CIRRUS_REGISTRATION says: knowing the secret is the authorisation.

// userTypes are the user_type values Synapse knows besides none; they take
// part in the MAC but Cirrus does not treat such users differently.
var userTypes = map[string]bool{"support": true, "bot": true}

func sharedSecretDisabled() *httpapi.Error {
	return httpapi.BadRequest("shared secret registration is not enabled")
}

// SharedSecretNonce serves GET /_synapse/admin/v1/register: a fresh
// single-use nonce, valid for accounts.RegistrationNonceLifetime.
func (a *API) SharedSecretNonce(r *httpapi.Request) (any, error) {
	if a.Cfg.RegistrationSharedSecret == "" {
		return nil, sharedSecretDisabled()
	}
	nonce, err := a.Accounts.NewRegistrationNonce(r.Ctx())
	if err != nil {
		return nil, err
	}
	return map[string]string{"nonce": nonce}, nil
}

// SharedSecretRegister serves POST /_synapse/admin/v1/register. The mac is
// the hex HMAC-SHA1, keyed with the shared secret, of
// nonce NUL username NUL password NUL ("admin" or "notadmin"), followed by
// NUL user_type when one is given.
func (a *API) SharedSecretRegister(r *httpapi.Request) (any, error) {
	if a.Cfg.RegistrationSharedSecret == "" {
		return nil, sharedSecretDisabled()
	}
	var req struct {
		Nonce       *string `json:"nonce"`
		Username    *string `json:"username"`
		Password    *string `json:"password"`
		DisplayName *string `json:"displayname"`
		Admin       bool    `json:"admin"`
		UserType    *string `json:"user_type"`
		MAC         *string `json:"mac"`
	}
	if err := r.DecodeJSON(&req); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		v    *string
	}{{"nonce", req.Nonce}, {"username", req.Username}, {"password", req.Password}, {"mac", req.MAC}} {
		if f.v == nil || *f.v == "" {
			return nil, httpapi.MissingParam("%s is required", f.name)
		}
	}
	if len(*req.Password) > maxPasswordBytes {
		return nil, httpapi.InvalidParam("password is longer than %d bytes", maxPasswordBytes)
	}
	if req.UserType != nil && !userTypes[*req.UserType] {
		return nil, httpapi.InvalidParam("unknown user_type %q", *req.UserType)
	}
	if req.DisplayName != nil && utf8.RuneCountInString(*req.DisplayName) > maxDisplayNameChars {
		return nil, httpapi.InvalidParam("displayname is longer than %d characters", maxDisplayNameChars)
	}
	uid, err := a.Accounts.UserID(*req.Username)
	if err != nil {
		return nil, err
	}
	ctx := r.Ctx()
	// The nonce is spent before the MAC is checked, so each guess at a MAC
	// costs a new nonce.
	ok, err := a.Accounts.ConsumeRegistrationNonce(ctx, *req.Nonce)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, httpapi.BadRequest("unrecognised nonce")
	}
	mac := hmac.New(sha1.New, []byte(a.Cfg.RegistrationSharedSecret))
	mac.Write([]byte(*req.Nonce + "\x00" + *req.Username + "\x00" + *req.Password + "\x00"))
	if req.Admin {
		mac.Write([]byte("admin"))
	} else {
		mac.Write([]byte("notadmin"))
	}
	if req.UserType != nil {
		mac.Write([]byte("\x00" + *req.UserType))
	}
	got, err := hex.DecodeString(*req.MAC)
	if err != nil || !hmac.Equal(got, mac.Sum(nil)) {
		return nil, httpapi.Forbidden("HMAC incorrect")
	}
	na := accounts.NewAccount{UserID: uid, Password: *req.Password, Admin: req.Admin,
		Login: accounts.LoginOptions{IP: httpapi.ClientIP(r.Request)}}
	if req.DisplayName != nil {
		na.DisplayName = *req.DisplayName
	}
	s, err := a.Accounts.CreateAccount(ctx, na)
	if err != nil {
		return nil, err
	}
	return map[string]any{"user_id": s.UserID, "access_token": s.AccessToken, "device_id": s.DeviceID, "home_server": a.Cfg.ServerName}, nil
}

// Server administration (spec: "Server administration" and "Account
// moderation"). Server admins are accounts with the admin flag (set by
// shared-secret registration with "admin": true).

// requireAdmin answers 403 unless the caller is a server admin. It runs
// before any lookup of the target, so non-admins learn nothing about
// which accounts exist.
func (a *API) requireAdmin(r *httpapi.Request) error {
	acct, err := a.Accounts.GetAccount(r.Ctx(), r.Caller.UserID)
	if err != nil || !acct.Admin {
		return httpapi.Forbidden("you are not a server admin")
	}
	return nil
}

// localTarget reads the {userId} of an admin route: a user id of this
// server (400 M_INVALID_PARAM otherwise).
func (a *API) localTarget(r *httpapi.Request) (id.UserID, error) {
	u, err := parseUserID(r.PathValue("userId"))
	if err != nil {
		return "", err
	}
	if u.Homeserver() != a.Cfg.ServerName {
		return "", httpapi.InvalidParam("%s is not a user of this server", u)
	}
	return u, nil
}

// Whois serves GET /_matrix/client/v3/admin/whois/{userId} to server admins
// and to the user themself: each device is one session (one access token)
// whose connection is where and with what client it was last seen
// (recorded at most every accounts.LastSeenInterval).
func (a *API) Whois(r *httpapi.Request) (any, error) {
	u, err := parseUserID(r.PathValue("userId"))
	if err != nil {
		return nil, err
	}
	if u != r.Caller.UserID {
		if err := a.requireAdmin(r); err != nil {
			return nil, err
		}
	}
	if u.Homeserver() != a.Cfg.ServerName {
		return nil, httpapi.InvalidParam("%s is not a user of this server", u)
	}
	if _, err := a.Accounts.GetAccount(r.Ctx(), u); err != nil {
		return nil, err // 404 M_NOT_FOUND for an unknown user
	}
	devs, err := a.Accounts.Devices(r.Ctx(), u)
	if err != nil {
		return nil, err
	}
	type connection struct {
		IP        string `json:"ip,omitempty"`
		LastSeen  int64  `json:"last_seen,omitempty"`
		UserAgent string `json:"user_agent,omitempty"`
	}
	type session struct {
		Connections []connection `json:"connections"`
	}
	type device struct {
		Sessions []session `json:"sessions"`
	}
	out := make(map[id.DeviceID]device, len(devs))
	for _, d := range devs {
		conns := []connection{}
		if d.LastSeenIP != "" || d.LastSeenMS != 0 {
			conns = append(conns, connection{IP: d.LastSeenIP, LastSeen: d.LastSeenMS, UserAgent: d.LastSeenUserAgent})
		}
		out[d.ID] = device{Sessions: []session{{Connections: conns}}}
	}
	return map[string]any{"user_id": u, "devices": out}, nil
}

// adminFlag is one of the boolean account flags of the admin API
// (suspended, locked), its JSON name and its setter.
type adminFlag struct {
	name string
	get  func(*accounts.Account) bool
	set  func(s *accounts.Service, ctx context.Context, u id.UserID, v bool) error
}

var (
	suspendFlag = adminFlag{"suspended", func(acct *accounts.Account) bool { return acct.Suspended }, (*accounts.Service).SetSuspended}
	lockFlag    = adminFlag{"locked", func(acct *accounts.Account) bool { return acct.Locked }, (*accounts.Service).SetLocked}
)

// adminTarget checks the caller (admin), then the target (local, exists,
// not deactivated), and returns the target's account.
func (a *API) adminTarget(r *httpapi.Request) (id.UserID, *accounts.Account, error) {
	if err := a.requireAdmin(r); err != nil {
		return "", nil, err
	}
	u, err := a.localTarget(r)
	if err != nil {
		return "", nil, err
	}
	acct, err := a.Accounts.GetAccount(r.Ctx(), u)
	if err != nil {
		return "", nil, err
	}
	if acct.Deactivated {
		return "", nil, httpapi.NotFound("%s is deactivated", u)
	}
	return u, acct, nil
}

func (a *API) getFlag(r *httpapi.Request, f adminFlag) (any, error) {
	_, acct, err := a.adminTarget(r)
	if err != nil {
		return nil, err
	}
	return map[string]bool{f.name: f.get(acct)}, nil
}

func (a *API) putFlag(r *httpapi.Request, f adminFlag) (any, error) {
	u, acct, err := a.adminTarget(r)
	if err != nil {
		return nil, err
	}
	var body map[string]json.RawMessage
	if err := r.DecodeJSON(&body); err != nil {
		return nil, err
	}
	raw, ok := body[f.name]
	if !ok {
		return nil, httpapi.MissingParam("%s is required", f.name)
	}
	var v bool
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, httpapi.BadJSON("%s must be a boolean", f.name)
	}
	if acct.Admin && u != r.Caller.UserID {
		return nil, httpapi.Forbidden("%s is a server admin", u)
	}
	if err := f.set(a.Accounts, r.Ctx(), u, v); err != nil {
		return nil, err
	}
	return map[string]bool{f.name: v}, nil
}

// GetSuspended serves GET /_matrix/client/v1/admin/suspend/{userId}.
func (a *API) GetSuspended(r *httpapi.Request) (any, error) { return a.getFlag(r, suspendFlag) }

// PutSuspended serves PUT /_matrix/client/v1/admin/suspend/{userId}.
func (a *API) PutSuspended(r *httpapi.Request) (any, error) { return a.putFlag(r, suspendFlag) }

// GetLocked serves GET /_matrix/client/v1/admin/lock/{userId}.
func (a *API) GetLocked(r *httpapi.Request) (any, error) { return a.getFlag(r, lockFlag) }

// PutLocked serves PUT /_matrix/client/v1/admin/lock/{userId}.
func (a *API) PutLocked(r *httpapi.Request) (any, error) { return a.putFlag(r, lockFlag) }
