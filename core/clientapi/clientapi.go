// Package clientapi holds the handlers of the client-server API. Each
// handler is a method of API; core/server's route table maps paths to them.
package clientapi

import (
	"time"

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
}

// API serves the client-server endpoints.
type API struct {
	Cfg      Config
	Accounts *accounts.Service
}
