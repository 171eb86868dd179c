package clientapi

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// OpenIDTokenLifetime is how long an OpenID token proves its user's identity.
const OpenIDTokenLifetime = time.Hour

// openIDKey is where an OpenID token lives: under the SHA-256 of the token,
// so a leaked table holds no usable token.
func openIDKey(token string) table.Key {
	sum := sha256.Sum256([]byte(token))
	return table.Key{PK: "openid#" + hex.EncodeToString(sum[:]), SK: "openid"}
}

type openIDRecord struct {
	UserID  id.UserID `json:"user_id"`
	Expires int64     `json:"expires_ms"`
}

// RequestOpenIDToken serves POST /_matrix/client/v3/user/{userId}/openid/request_token:
// a token a third party can check with our federation API to learn who the
// user is. Only for oneself.
func (a *DiscoveryAPI) RequestOpenIDToken(r *httpapi.Request) (any, error) {
	if id.UserID(r.PathValue("userId")) != r.Caller.UserID {
		return nil, httpapi.Forbidden("cannot request an OpenID token for another user")
	}
	// The body is an empty object; some clients (mautrix-go) send none.
	var body map[string]any
	if err := r.DecodeOptionalJSON(&body); err != nil {
		return nil, err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	token := base64.RawURLEncoding.EncodeToString(raw)
	expires := a.now().Add(OpenIDTokenLifetime)
	d, _ := json.Marshal(openIDRecord{UserID: r.Caller.UserID, Expires: expires.UnixMilli()})
	k := openIDKey(token)
	if err := a.T.Put(r.Ctx(), table.Item{PK: k.PK, SK: k.SK, Data: d, TTL: expires.Unix() + 1}, table.IfNotExists()); err != nil {
		return nil, err
	}
	return map[string]any{
		"access_token":       token,
		"token_type":         "Bearer",
		"matrix_server_name": a.ServerName,
		"expires_in":         int64(OpenIDTokenLifetime / time.Second),
	}, nil
}

// OpenIDUserInfo serves GET /_matrix/federation/v1/openid/userinfo: the
// token itself is the authentication (no X-Matrix signature).
func (a *DiscoveryAPI) OpenIDUserInfo(r *httpapi.Request) (any, error) {
	token := r.URL.Query().Get("access_token")
	if token == "" {
		return nil, httpapi.UnknownToken("access_token is missing")
	}
	it, err := a.T.Get(r.Ctx(), openIDKey(token))
	if errors.Is(err, table.ErrNotFound) {
		return nil, httpapi.UnknownToken("unknown or expired OpenID token")
	}
	if err != nil {
		return nil, err
	}
	var rec openIDRecord
	if err := json.Unmarshal(it.Data, &rec); err != nil {
		return nil, err
	}
	if a.now().UnixMilli() >= rec.Expires {
		return nil, httpapi.UnknownToken("unknown or expired OpenID token")
	}
	return map[string]any{"sub": rec.UserID}, nil
}
