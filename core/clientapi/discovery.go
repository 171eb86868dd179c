package clientapi

import (
	"github.com/cirrus-matrix/cirrus/core/httpapi"
)

// SpecVersions are the client-server spec versions Cirrus advertises.
var SpecVersions = []string{
	"r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10",
	"v1.11", "v1.12", "v1.13", "v1.14", "v1.15", "v1.16", "v1.17", "v1.18", "v1.19",
}

// SupportedRoomVersions are the room versions the server accepts, and the default.
var (
	SupportedRoomVersions = []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"}
	DefaultRoomVersion    = "12"
)

// Versions serves GET /_matrix/client/versions.
func (a *API) Versions(r *httpapi.Request) (any, error) {
	return map[string]any{
		"versions": SpecVersions,
		"unstable_features": map[string]bool{
			"org.matrix.msc3814":            true, // dehydrated devices (dehydrated.go)
			"org.matrix.msc4222":            true, // use_state_after / state_after in /sync (v1.16)
			"org.matrix.simplified_msc3575": true, // simplified sliding sync, MSC4186 (core/slidingsync)
		},
	}, nil
}

// WellKnownClient serves GET /.well-known/matrix/client.
func (a *API) WellKnownClient(r *httpapi.Request) (any, error) {
	return map[string]any{"m.homeserver": map[string]string{"base_url": a.Cfg.PublicBaseURL}}, nil
}

// WellKnownServer serves GET /.well-known/matrix/server (404 when no
// delegation is configured, as the spec asks).
func (a *API) WellKnownServer(r *httpapi.Request) (any, error) {
	if a.Cfg.WellKnownServer == "" {
		return nil, httpapi.NotFound("no server delegation configured")
	}
	return map[string]string{"m.server": a.Cfg.WellKnownServer}, nil
}

// Capabilities serves GET /_matrix/client/v3/capabilities. Guests have no
// password, so they can neither change it nor pass the password stage that
// /login/get_token asks for.
func (a *API) Capabilities(r *httpapi.Request) (any, error) {
	avail := make(map[string]string, len(SupportedRoomVersions))
	for _, v := range SupportedRoomVersions {
		avail[v] = "stable"
	}
	hasPassword := r.Caller != nil && !r.Caller.IsGuest
	return map[string]any{"capabilities": map[string]any{
		"m.change_password": map[string]bool{"enabled": hasPassword},
		"m.room_versions":   map[string]any{"default": DefaultRoomVersion, "available": avail},
		"m.set_displayname": map[string]bool{"enabled": true},
		"m.set_avatar_url":  map[string]bool{"enabled": true},
		"m.3pid_changes":    map[string]bool{"enabled": false},
		"m.get_login_token": map[string]bool{"enabled": hasPassword},
		"m.profile_fields":  map[string]any{"enabled": true},
	}}, nil
}
