package clientapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/accounts"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
)

// maxPasswordBytes bounds new passwords (as registration does).
const maxPasswordBytes = 512

// stagePassword is the UIA stage every account endpoint asks for.
const stagePassword = "m.login.password"

// passwordUIA is user-interactive auth with the flow [["m.login.password"]]
// (and [["m.login.sso"]] when identity providers are configured): the caller proves it is them by giving their own
// password again. purpose binds the session to one operation (and its
// parameters), so a session completed for one thing cannot authorise another.
func (a *API) passwordUIA(purpose string, caller *httpapi.Caller) accounts.UIA {
	flows := []accounts.Flow{{stagePassword}}
	if a.SSO.Configured() {
		// Users who sign in at an identity provider (and may have no
		// password) prove it is them there: the fallback page (sso.go).
		flows = append(flows, accounts.Flow{accounts.StageSSO})
	}
	return accounts.UIA{
		Purpose: purpose,
		User:    caller.UserID,
		Flows:   flows,
		Check: func(ctx context.Context, stage string, auth *accounts.AuthDict) error {
			return a.checkPasswordStage(ctx, caller.UserID, stage, auth)
		},
	}
}

// checkPasswordStage verifies an m.login.password stage: the identifier (or
// the deprecated "user") must name the caller, and the password must be the
// caller's. A deactivated account still passes (deactivation may be retried
// after a partial failure).
func (a *API) checkPasswordStage(ctx context.Context, caller id.UserID, stage string, auth *accounts.AuthDict) error {
	if stage != stagePassword {
		return httpapi.BadRequest("unsupported stage %q", stage)
	}
	var body struct {
		Identifier *struct {
			Type string `json:"type"`
			User string `json:"user"`
		} `json:"identifier"`
		User     string `json:"user"`
		Password string `json:"password"`
	}
	if err := json.Unmarshal(auth.Raw, &body); err != nil {
		return httpapi.BadJSON("auth has the wrong shape")
	}
	user := body.User
	if body.Identifier != nil {
		if body.Identifier.Type != "m.id.user" {
			return httpapi.BadRequest("unsupported identifier type %q", body.Identifier.Type)
		}
		user = body.Identifier.User
	}
	if user == "" {
		return httpapi.MissingParam("auth.identifier.user is required")
	}
	if body.Password == "" {
		return httpapi.MissingParam("auth.password is required")
	}
	uid, err := a.Accounts.ResolveUser(user)
	if err != nil {
		return err
	}
	if uid != caller {
		return httpapi.Forbidden("the identifier does not name the user making this request")
	}
	_, err = a.Accounts.VerifyPassword(ctx, uid, body.Password)
	return err
}

// runPasswordUIA runs passwordUIA; it returns nil, nil when the caller is
// authenticated, else the response to send (the 401 challenge).
func (a *API) runPasswordUIA(r *httpapi.Request, purpose string, auth *accounts.AuthDict) (any, error) {
	done, challenge, err := a.Accounts.RunUIA(r.Ctx(), a.passwordUIA(purpose, r.Caller), auth)
	if err != nil {
		return nil, err
	}
	if !done {
		return challenge, nil
	}
	return nil, nil
}

// purposeOf joins a purpose name with a digest of its parameters.
func purposeOf(name string, params ...string) string {
	if len(params) == 0 {
		return name
	}
	h := sha256.Sum256([]byte(strings.Join(params, "\x00")))
	return name + ":" + hex.EncodeToString(h[:12])
}

// ChangePassword serves POST /_matrix/client/v3/account/password.
func (a *API) ChangePassword(r *httpapi.Request) (any, error) {
	var req struct {
		NewPassword   *string            `json:"new_password"`
		LogoutDevices *bool              `json:"logout_devices"`
		Auth          *accounts.AuthDict `json:"auth"`
	}
	if err := r.DecodeJSON(&req); err != nil {
		return nil, err
	}
	if req.NewPassword == nil || *req.NewPassword == "" {
		return nil, httpapi.MissingParam("new_password is required")
	}
	if len(*req.NewPassword) > maxPasswordBytes {
		return nil, httpapi.InvalidParam("new_password is longer than %d bytes", maxPasswordBytes)
	}
	if err := noGuests(r); err != nil {
		return nil, err
	}
	if resp, err := a.runPasswordUIA(r, "change_password", req.Auth); resp != nil || err != nil {
		return resp, err
	}
	ctx := r.Ctx()
	if err := a.Accounts.SetPassword(ctx, r.Caller.UserID, *req.NewPassword); err != nil {
		return nil, err
	}
	// Other sessions go unless the client asked to keep them; the one that
	// made this request stays (the spec says it SHOULD NOT be revoked).
	if req.LogoutDevices == nil || *req.LogoutDevices {
		if err := a.Accounts.DeleteAllDevices(ctx, r.Caller.UserID, r.Caller.DeviceID); err != nil {
			return nil, err
		}
		if err := a.dropAllDeviceKeys(ctx, r.Caller.UserID, r.Caller.DeviceID); err != nil {
			return nil, err
		}
	}
	return httpapi.Empty{}, nil
}

// Deactivate serves POST /_matrix/client/v3/account/deactivate.
func (a *API) Deactivate(r *httpapi.Request) (any, error) {
	var req struct {
		Auth     *accounts.AuthDict `json:"auth"`
		IDServer *string            `json:"id_server"`
		Erase    *bool              `json:"erase"`
	}
	if err := r.DecodeJSON(&req); err != nil {
		return nil, err
	}
	if err := noGuests(r); err != nil {
		return nil, err
	}
	if resp, err := a.runPasswordUIA(r, "deactivate", req.Auth); resp != nil || err != nil {
		return resp, err
	}
	ctx := r.Ctx()
	u := r.Caller.UserID
	// Order matters for retries: the account stops accepting logins first;
	// the caller's token is revoked last, so if leaving rooms fails the
	// client can simply try again.
	if err := a.Accounts.Deactivate(ctx, u); err != nil {
		return nil, err
	}
	if req.Erase != nil && *req.Erase {
		if err := a.Accounts.DeleteProfile(ctx, u); err != nil {
			return nil, err
		}
	}
	if a.RoomLeaver != nil {
		if err := a.RoomLeaver.LeaveAllRooms(ctx, u); err != nil {
			return nil, err
		}
	}
	if err := a.Accounts.DeleteAllDevices(ctx, u, ""); err != nil {
		return nil, err
	}
	if err := a.dropAllDeviceKeys(ctx, u, ""); err != nil {
		return nil, err
	}
	// Cirrus keeps no third-party identifiers, so there is nothing to unbind
	// from any identity server; the spec says the answer "must be success if
	// the homeserver has no identifiers to unbind for the user".
	return map[string]string{"id_server_unbind_result": "success"}, nil
}

// GetLoginToken serves POST /_matrix/client/v1/login/get_token: after the
// password stage (asked every time: UIA sessions are spent on completion,
// as the spec requires for this endpoint) it issues a single-use token for
// an m.login.token login.
func (a *API) GetLoginToken(r *httpapi.Request) (any, error) {
	var req struct {
		Auth *accounts.AuthDict `json:"auth"`
	}
	if err := r.DecodeOptionalJSON(&req); err != nil {
		return nil, err
	}
	if err := noGuests(r); err != nil {
		return nil, err
	}
	if resp, err := a.runPasswordUIA(r, "get_login_token", req.Auth); resp != nil || err != nil {
		return resp, err
	}
	tok, err := a.Accounts.CreateLoginToken(r.Ctx(), r.Caller.UserID, accounts.LoginTokenLifetime)
	if err != nil {
		return nil, err
	}
	return map[string]any{"login_token": tok, "expires_in_ms": accounts.LoginTokenLifetime.Milliseconds()}, nil
}

// noGuests refuses guest callers: the guest access module lists what guests
// may use, and account management is not in it.
func noGuests(r *httpapi.Request) error {
	if r.Caller != nil && r.Caller.IsGuest {
		return &httpapi.Error{Status: http.StatusForbidden, Code: "M_GUEST_ACCESS_FORBIDDEN", Message: "guest accounts may not use this endpoint"}
	}
	return nil
}

// sortedUnique returns the distinct strings of ss in order.
func sortedUnique(ss []string) []string {
	out := slices.Clone(ss)
	slices.Sort(out)
	return slices.Compact(out)
}
