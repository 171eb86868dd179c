package clientapi

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"unicode/utf8"

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
