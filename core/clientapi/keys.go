package clientapi

import (
	"context"
	"encoding/json"
	"errors"

	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/accounts"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/keys"
)

// DeviceKeyKeeper keeps the end-to-end encryption keys and device lists in
// step with the devices: it drops the keys of devices that were deleted
// (logout, device deletion, password change, deactivation) and announces
// renamed ones. core/keys implements it.
type DeviceKeyKeeper interface {
	DeleteDeviceKeys(ctx context.Context, u id.UserID, devs []id.DeviceID) error
	DeleteAllDeviceKeys(ctx context.Context, u id.UserID, keep id.DeviceID) error
	DeviceRenamed(ctx context.Context, u id.UserID, dev id.DeviceID) error
}

// dropDeviceKeys removes deleted devices' keys, if keys are kept at all.
func (a *API) dropDeviceKeys(ctx context.Context, u id.UserID, devs ...id.DeviceID) error {
	if a.DeviceKeys == nil || len(devs) == 0 {
		return nil
	}
	return a.DeviceKeys.DeleteDeviceKeys(ctx, u, devs)
}

// dropAllDeviceKeys removes the keys of every device of u but keep.
func (a *API) dropAllDeviceKeys(ctx context.Context, u id.UserID, keep id.DeviceID) error {
	if a.DeviceKeys == nil {
		return nil
	}
	return a.DeviceKeys.DeleteAllDeviceKeys(ctx, u, keep)
}

// KeysAPI serves the end-to-end encryption endpoints: keys, cross-signing,
// device-list changes and key backups.
type KeysAPI struct {
	// API runs user-interactive auth (the password stage).
	API  *API
	Keys *keys.Service
	// TokenPos finds the device-list position in a /keys/changes token
	// (keys.ParseToken, the "d<pos>" form, if nil).
	TokenPos keys.TokenParser
}

// UploadKeys serves POST /_matrix/client/v3/keys/upload.
func (k *KeysAPI) UploadKeys(r *httpapi.Request) (any, error) {
	var req keys.UploadRequest
	if err := r.DecodeJSON(&req); err != nil {
		return nil, err
	}
	counts, err := k.Keys.Upload(r.Ctx(), r.Caller.UserID, r.Caller.DeviceID, &req)
	if err != nil {
		return nil, err
	}
	return map[string]any{"one_time_key_counts": counts}, nil
}

// parseUserID checks a user id named in a request body.
func parseUserID(s string) (id.UserID, error) {
	u := id.UserID(s)
	if _, _, err := u.Parse(); err != nil {
		return "", httpapi.InvalidParam("%q is not a user id", s)
	}
	return u, nil
}

// QueryKeys serves POST /_matrix/client/v3/keys/query.
func (k *KeysAPI) QueryKeys(r *httpapi.Request) (any, error) {
	var req struct {
		DeviceKeys map[string][]id.DeviceID `json:"device_keys"`
		Timeout    *int64                   `json:"timeout"`
	}
	if err := r.DecodeJSON(&req); err != nil {
		return nil, err
	}
	if req.DeviceKeys == nil {
		return nil, httpapi.MissingParam("device_keys is required")
	}
	want := make(map[id.UserID][]id.DeviceID, len(req.DeviceKeys))
	for s, devs := range req.DeviceKeys {
		u, err := parseUserID(s)
		if err != nil {
			return nil, err
		}
		want[u] = devs
	}
	return k.Keys.Query(r.Ctx(), r.Caller.UserID, want, keys.RemoteTimeout(req.Timeout))
}

// ClaimKeys serves POST /_matrix/client/v3/keys/claim.
func (k *KeysAPI) ClaimKeys(r *httpapi.Request) (any, error) {
	var req struct {
		OneTimeKeys map[string]map[id.DeviceID]string `json:"one_time_keys"`
		Timeout     *int64                            `json:"timeout"`
	}
	if err := r.DecodeJSON(&req); err != nil {
		return nil, err
	}
	if req.OneTimeKeys == nil {
		return nil, httpapi.MissingParam("one_time_keys is required")
	}
	want := make(map[id.UserID]map[id.DeviceID]string, len(req.OneTimeKeys))
	for s, devs := range req.OneTimeKeys {
		u, err := parseUserID(s)
		if err != nil {
			return nil, err
		}
		want[u] = devs
	}
	return k.Keys.Claim(r.Ctx(), want, keys.RemoteTimeout(req.Timeout))
}

// KeyChanges serves GET /_matrix/client/v3/keys/changes. It takes the
// tokens /sync hands out (through TokenPos) or Cirrus's own "d<pos>" form.
func (k *KeysAPI) KeyChanges(r *httpapi.Request) (any, error) {
	q := r.URL.Query()
	from, to, err := keys.ParsePositions(k.TokenPos, q.Get("from"), q.Get("to"))
	if err != nil {
		return nil, err
	}
	changed, left, err := k.Keys.ChangesBetween(r.Ctx(), r.Caller.UserID, from, to)
	if err != nil {
		return nil, err
	}
	return map[string]any{"changed": changed, "left": left}, nil
}

// UploadCrossSigningKeys serves POST /_matrix/client/v3/keys/device_signing/upload.
// The first upload, and an upload of the keys already stored, need no
// user-interactive auth; replacing keys needs the password stage.
func (k *KeysAPI) UploadCrossSigningKeys(r *httpapi.Request) (any, error) {
	if err := noGuests(r); err != nil {
		return nil, err
	}
	var req struct {
		keys.CrossSigningUpload
		Auth *accounts.AuthDict `json:"auth"`
	}
	if err := r.DecodeJSON(&req); err != nil {
		return nil, err
	}
	ctx := r.Ctx()
	plan, err := k.Keys.PlanCrossSigning(ctx, r.Caller.UserID, &req.CrossSigningUpload)
	if err != nil {
		return nil, err
	}
	authorized := false
	if plan.NeedsAuth {
		if resp, err := k.API.runPasswordUIA(r, k.crossSigningPurpose(&req.CrossSigningUpload), req.Auth); resp != nil || err != nil {
			return resp, err
		}
		authorized = true
	}
	err = k.Keys.ApplyCrossSigning(ctx, plan, authorized)
	if errors.Is(err, keys.ErrNeedsAuth) {
		// Keys appeared between the check and the write: ask for auth now.
		if resp, err := k.API.runPasswordUIA(r, k.crossSigningPurpose(&req.CrossSigningUpload), nil); resp != nil || err != nil {
			return resp, err
		}
	}
	if err != nil {
		return nil, err
	}
	return httpapi.Empty{}, nil
}

// crossSigningPurpose binds a UIA session to the keys being uploaded.
func (k *KeysAPI) crossSigningPurpose(req *keys.CrossSigningUpload) string {
	canon := func(raw json.RawMessage) string {
		if c, err := canonicaljson.CanonicalJSON(raw); err == nil {
			return string(c)
		}
		return string(raw)
	}
	return purposeOf("device_signing_upload", canon(req.Master), canon(req.SelfSigning), canon(req.UserSigning))
}

// UploadSignatures serves POST /_matrix/client/v3/keys/signatures/upload.
func (k *KeysAPI) UploadSignatures(r *httpapi.Request) (any, error) {
	if err := noGuests(r); err != nil {
		return nil, err
	}
	var req map[string]map[string]json.RawMessage
	if err := r.DecodeJSON(&req); err != nil {
		return nil, err
	}
	body := make(map[id.UserID]map[string]json.RawMessage, len(req))
	for s, objs := range req {
		u, err := parseUserID(s)
		if err != nil {
			return nil, err
		}
		body[u] = objs
	}
	failures, err := k.Keys.UploadSignatures(r.Ctx(), r.Caller.UserID, body)
	if err != nil {
		return nil, err
	}
	return map[string]any{"failures": failures}, nil
}
