package clientapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"unicode/utf8"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/accounts"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
)

// Limits on the fields this server gives a meaning to.
const (
	maxDisplayNameChars = 256
	maxAvatarURLBytes   = 1000
	maxTimeZoneBytes    = 255
)

// profileKeyRE is the Common Namespaced Identifier Grammar that custom
// profile keys follow (length is checked separately, for M_KEY_TOO_LARGE).
var profileKeyRE = regexp.MustCompile(`^[a-z][a-z0-9._-]*$`)

// checkProfileKey validates a {keyName}: displayname, avatar_url, m.tz, or a
// namespaced identifier (it must contain a dot: the spec asks custom keys
// to be namespaced).
func checkProfileKey(key string) error {
	if len(key) > accounts.MaxProfileKeyBytes {
		return &httpapi.Error{Status: http.StatusBadRequest, Code: "M_KEY_TOO_LARGE",
			Message: "profile key is longer than 255 bytes"}
	}
	switch key {
	case accounts.FieldDisplayName, accounts.FieldAvatarURL, accounts.FieldTimeZone:
		return nil
	}
	if !profileKeyRE.MatchString(key) || !strings.Contains(key, ".") || strings.Contains(key, "..") || strings.HasSuffix(key, ".") {
		return httpapi.InvalidParam("invalid profile key %q: use displayname, avatar_url, m.tz or a namespaced key such as org.example.field", key)
	}
	return nil
}

// profileUser reads {userId}: M_INVALID_PARAM if it is not a user ID.
func (a *API) profileUser(r *httpapi.Request) (id.UserID, bool, error) {
	u := id.UserID(r.PathValue("userId"))
	_, server, err := u.Parse()
	if err != nil || len(u) > 255 {
		return "", false, httpapi.InvalidParam("%q is not a user ID", string(u))
	}
	return u, server == a.Cfg.ServerName, nil
}

// lookupProfile loads a local user's profile; an unknown or deactivated
// user, or a user of another server (there is no federation to ask yet), is
// 404 M_NOT_FOUND.
func (a *API) lookupProfile(r *httpapi.Request) (accounts.Profile, error) {
	u, local, err := a.profileUser(r)
	if err != nil {
		return nil, err
	}
	if !local {
		if a.RemoteProfile == nil {
			return nil, httpapi.NotFound("profile not found")
		}
		rp, err := a.RemoteProfile(r.Ctx(), u, r.PathValue("keyName"))
		if err != nil {
			return nil, err
		}
		out := accounts.Profile{}
		for k, v := range rp {
			out[k], _ = json.Marshal(v)
		}
		return out, nil
	}
	p, err := a.Accounts.GetProfile(r.Ctx(), u)
	if err == nil && !p.Exists && a.AppServices.queryUser(r.Ctx(), u) {
		p, err = a.Accounts.GetProfile(r.Ctx(), u) // an application service created it just now
	}
	if err != nil {
		return nil, err
	}
	if !p.Exists || p.Deactivated {
		return nil, httpapi.NotFound("profile not found")
	}
	return p.Fields, nil
}

// Profile serves GET /_matrix/client/v3/profile/{userId}.
func (a *API) Profile(r *httpapi.Request) (any, error) {
	return a.lookupProfile(r)
}

// ProfileField serves GET /_matrix/client/v3/profile/{userId}/{keyName}.
func (a *API) ProfileField(r *httpapi.Request) (any, error) {
	key := r.PathValue("keyName")
	if err := checkProfileKey(key); err != nil {
		return nil, err
	}
	p, err := a.lookupProfile(r)
	if err != nil {
		return nil, err
	}
	v, ok := p[key]
	if !ok {
		return nil, httpapi.NotFound("the user has no profile field %q", key)
	}
	return map[string]json.RawMessage{key: v}, nil
}

// ownProfile checks that the caller may change this profile and key: only
// its owner may, and a guest only its display name.
func (a *API) ownProfile(r *httpapi.Request, key string) (id.UserID, error) {
	if err := checkProfileKey(key); err != nil {
		return "", err
	}
	u, _, err := a.profileUser(r)
	if err != nil {
		return "", err
	}
	if u != r.Caller.UserID {
		return "", httpapi.Forbidden("you may only change your own profile")
	}
	if r.Caller.IsGuest && key != accounts.FieldDisplayName {
		return "", &httpapi.Error{Status: http.StatusForbidden, Code: "M_GUEST_ACCESS_FORBIDDEN", Message: "guests may only change their display name"}
	}
	return u, nil
}

// profileValue checks a new value for key and returns what to store (nil
// means remove the field: an empty display name or avatar URL clears it,
// as clients have long done).
func profileValue(key string, raw json.RawMessage) (json.RawMessage, error) {
	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return nil, httpapi.BadJSON("invalid value for %s", key)
	}
	v := json.RawMessage(compact.Bytes())
	var s string
	isString := json.Unmarshal(v, &s) == nil && v[0] == '"'
	switch key {
	case accounts.FieldDisplayName:
		if !isString {
			return nil, httpapi.InvalidParam("displayname must be a string")
		}
		if utf8.RuneCountInString(s) > maxDisplayNameChars {
			return nil, httpapi.InvalidParam("displayname is longer than %d characters", maxDisplayNameChars)
		}
		if s == "" {
			return nil, nil
		}
	case accounts.FieldAvatarURL:
		if !isString {
			return nil, httpapi.InvalidParam("avatar_url must be a string")
		}
		if s == "" {
			return nil, nil
		}
		if len(s) > maxAvatarURLBytes || !validMXC(s) {
			return nil, httpapi.InvalidParam("avatar_url must be an mxc:// URI")
		}
	case accounts.FieldTimeZone:
		// The spec lets servers skip validating the zone name itself.
		if !isString {
			return nil, httpapi.InvalidParam("m.tz must be a string")
		}
		if len(s) > maxTimeZoneBytes {
			return nil, httpapi.InvalidParam("m.tz is longer than %d bytes", maxTimeZoneBytes)
		}
	}
	// Custom fields may hold any JSON value, null included (stored, not
	// taken as a deletion, as the spec recommends).
	return v, nil
}

// validMXC accepts mxc://<server name>/<media id>.
func validMXC(s string) bool {
	rest, ok := strings.CutPrefix(s, "mxc://")
	if !ok {
		return false
	}
	server, media, ok := strings.Cut(rest, "/")
	if !ok || media == "" || strings.ContainsAny(media, "/?# ") || !id.ValidateServerName(server) {
		return false
	}
	return true
}

// SetProfileField serves PUT /_matrix/client/v3/profile/{userId}/{keyName}.
// The body is an object whose property named keyName holds the new value;
// other properties are ignored.
func (a *API) SetProfileField(r *httpapi.Request) (any, error) {
	key := r.PathValue("keyName")
	u, err := a.ownProfile(r, key)
	if err != nil {
		return nil, err
	}
	var body map[string]json.RawMessage
	if err := r.DecodeJSON(&body); err != nil {
		return nil, err
	}
	raw, ok := body[key]
	if !ok {
		return nil, httpapi.MissingParam("the body must have a %q property", key)
	}
	val, err := profileValue(key, raw)
	if err != nil {
		return nil, err
	}
	return a.changeProfile(r, u, key, val)
}

// DeleteProfileField serves DELETE /_matrix/client/v3/profile/{userId}/{keyName}
// (a field that is not set is a success too).
func (a *API) DeleteProfileField(r *httpapi.Request) (any, error) {
	key := r.PathValue("keyName")
	u, err := a.ownProfile(r, key)
	if err != nil {
		return nil, err
	}
	return a.changeProfile(r, u, key, nil)
}

// changeProfile sets (val != nil) or removes a field; a change of display
// name or avatar goes on to the user's rooms through ProfileSync.
func (a *API) changeProfile(r *httpapi.Request, u id.UserID, key string, val json.RawMessage) (any, error) {
	changed := false
	p, err := a.Accounts.UpdateProfile(r.Ctx(), u, func(p accounts.Profile) error {
		old, had := p[key]
		if val == nil {
			changed = had
			delete(p, key)
		} else {
			changed = !had || !bytes.Equal(old, val)
			p[key] = val
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if changed && a.ProfileSync != nil && (key == accounts.FieldDisplayName || key == accounts.FieldAvatarURL) {
		if err := a.ProfileSync.ProfileChanged(r.Ctx(), u, p.String(accounts.FieldDisplayName), p.String(accounts.FieldAvatarURL)); err != nil {
			return nil, err
		}
	}
	return httpapi.Empty{}, nil
}
