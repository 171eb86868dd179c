package federation

import (
	"context"
	"encoding/json"
	"net/http"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/keys"
)

// UserKeys is the server-server side of end-to-end encryption: it serves
// our users' device lists and keys to other servers (/user/devices,
// /user/keys/query, /user/keys/claim), and asks other servers for theirs on
// behalf of the key store (it implements keys.Federation).
type UserKeys struct {
	Fed  *Service
	Keys *keys.Service
}

// localUser reads a user id that must belong to this server.
func (u *UserKeys) localUser(s string) (id.UserID, error) {
	user := id.UserID(s)
	if _, _, err := user.Parse(); err != nil {
		return "", httpapi.InvalidParam("%q is not a user id", s)
	}
	if !u.Fed.isLocal(user) {
		return "", httpapi.InvalidParam("user %s is not on this server", user)
	}
	return user, nil
}

// Devices serves GET /_matrix/federation/v1/user/devices/{userId}.
func (u *UserKeys) Devices(r *httpapi.Request) (any, error) {
	user, err := u.localUser(r.PathValue("userId"))
	if err != nil {
		return nil, err
	}
	return u.Keys.DeviceList(r.Ctx(), user)
}

// Query serves POST /_matrix/federation/v1/user/keys/query. Users of
// other servers are ignored.
func (u *UserKeys) Query(r *httpapi.Request) (any, error) {
	var req struct {
		DeviceKeys map[string][]id.DeviceID `json:"device_keys"`
	}
	if err := r.DecodeJSON(&req); err != nil {
		return nil, err
	}
	if req.DeviceKeys == nil {
		return nil, httpapi.MissingParam("device_keys is required")
	}
	want := map[id.UserID][]id.DeviceID{}
	for s, devs := range req.DeviceKeys {
		if user, err := u.localUser(s); err == nil {
			want[user] = devs
		}
	}
	res, err := u.Keys.Query(r.Ctx(), "", want, 0)
	if err != nil {
		return nil, err
	}
	return map[string]any{"device_keys": res.DeviceKeys, "master_keys": res.MasterKeys,
		"self_signing_keys": res.SelfSigningKeys}, nil
}

// Claim serves POST /_matrix/federation/v1/user/keys/claim. Users of
// other servers are ignored.
func (u *UserKeys) Claim(r *httpapi.Request) (any, error) {
	var req struct {
		OneTimeKeys map[string]map[id.DeviceID]string `json:"one_time_keys"`
	}
	if err := r.DecodeJSON(&req); err != nil {
		return nil, err
	}
	if req.OneTimeKeys == nil {
		return nil, httpapi.MissingParam("one_time_keys is required")
	}
	want := map[id.UserID]map[id.DeviceID]string{}
	for s, devs := range req.OneTimeKeys {
		if user, err := u.localUser(s); err == nil {
			want[user] = devs
		}
	}
	res, err := u.Keys.Claim(r.Ctx(), want, 0)
	if err != nil {
		return nil, err
	}
	return map[string]any{"one_time_keys": res.OneTimeKeys}, nil
}

// ---- asking other servers (keys.Federation) ----

// QueryUserKeys asks server for its users' device and cross-signing keys.
func (u *UserKeys) QueryUserKeys(ctx context.Context, server string, want map[id.UserID][]id.DeviceID) (*keys.QueryResult, error) {
	req := map[string]any{"device_keys": want}
	var resp keys.QueryResult
	if err := u.Fed.Client.MakeRequest(ctx, server, true, http.MethodPost, mfed.URLPath{"v1", "user", "keys", "query"}, req, &resp); err != nil {
		return nil, remoteError(server, err)
	}
	return &resp, nil
}

// ClaimUserKeys claims one-time keys of server's users.
func (u *UserKeys) ClaimUserKeys(ctx context.Context, server string, want map[id.UserID]map[id.DeviceID]string) (map[id.UserID]map[id.DeviceID]map[string]json.RawMessage, error) {
	req := map[string]any{"one_time_keys": want}
	var resp struct {
		OneTimeKeys map[id.UserID]map[id.DeviceID]map[string]json.RawMessage `json:"one_time_keys"`
	}
	if err := u.Fed.Client.MakeRequest(ctx, server, true, http.MethodPost, mfed.URLPath{"v1", "user", "keys", "claim"}, req, &resp); err != nil {
		return nil, remoteError(server, err)
	}
	return resp.OneTimeKeys, nil
}

// UserDevices fetches a remote user's whole device list.
func (u *UserKeys) UserDevices(ctx context.Context, server string, user id.UserID) (*keys.UserDevices, error) {
	var resp keys.UserDevices
	if err := u.Fed.Client.MakeRequest(ctx, server, true, http.MethodGet, mfed.URLPath{"v1", "user", "devices", user}, nil, &resp); err != nil {
		return nil, remoteError(server, err)
	}
	return &resp, nil
}

// SendEDU queues an EDU for the destinations (the federation sender).
func (u *UserKeys) SendEDU(ctx context.Context, destinations []string, typ string, content any) error {
	return u.Fed.SendEDU(ctx, destinations, typ, content)
}

// RegisterEDUs makes the key store apply the device-list EDUs other
// servers send.
func (u *UserKeys) RegisterEDUs() {
	u.Fed.HandleEDU(keys.EDUDeviceListUpdate, u.Keys.ApplyDeviceListUpdate)
	u.Fed.HandleEDU(keys.EDUSigningKeyUpdate, u.Keys.ApplySigningKeyUpdate)
}
