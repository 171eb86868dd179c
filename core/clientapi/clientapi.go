// Package clientapi holds the handlers of the client-server API. Each
// handler is a method of API; core/server's route table maps paths to them.
package clientapi

import (
	"context"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/accounts"
)

// Registration modes.
const (
	RegistrationOpen   = "open"
	RegistrationToken  = "token"
	RegistrationClosed = "closed"
)

// Config is what the client API needs to know about its deployment.
type Config struct {
	ServerName string
	// PublicBaseURL is where clients reach the client API (for
	// /.well-known/matrix/client).
	PublicBaseURL string
	// WellKnownServer is the delegated federation host:port for
	// /.well-known/matrix/server ("" answers 404).
	WellKnownServer string
	// Registration is open, token or closed.
	Registration string
	// RegistrationTokens are accepted by m.login.registration_token.
	RegistrationTokens []string
	// GuestAccess allows kind=guest registration.
	GuestAccess bool
	// RefreshTokenLifetime is the access token lifetime given to clients that
	// ask for a refresh token.
	RefreshTokenLifetime time.Duration
	// RegistrationSharedSecret enables Synapse-compatible shared-secret
	// registration (/_synapse/admin/v1/register) when not empty.
	RegistrationSharedSecret string
}

// RoomLeaver makes a user leave every room they are in (used when an
// account is deactivated). The rooms subsystem implements it.
type RoomLeaver interface {
	LeaveAllRooms(ctx context.Context, userID id.UserID) error
}

// ProfileSync propagates a changed display name or avatar to the user's
// member event in every room they are joined to. The rooms subsystem
// implements it.
type ProfileSync interface {
	ProfileChanged(ctx context.Context, userID id.UserID, displayname, avatarURL string) error
}

// API serves the client-server endpoints.
type API struct {
	Cfg      Config
	Accounts *accounts.Service
	// RoomLeaver and ProfileSync are optional (nil: nothing to do).
	RoomLeaver  RoomLeaver
	ProfileSync ProfileSync
	// RemoteProfile, if set, asks another server for its user's profile
	// (field "" for all of it).
	RemoteProfile func(ctx context.Context, u id.UserID, field string) (map[string]any, error)
	// DeviceKeys, if set, drops the encryption keys of deleted devices and
	// announces renamed ones.
	DeviceKeys DeviceKeyKeeper
	// AppServices is the application service support (nil: none configured).
	AppServices *AppServiceAPI
	// SSO is login through OpenID Connect providers (nil: none configured).
	SSO *SSOAPI
}
