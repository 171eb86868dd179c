package server

import (
	"net/netip"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/clientapi"
	"github.com/cirrus-matrix/cirrus/core/netguard"
)

// SSOConfig is the settings of login through OpenID Connect providers.
type SSOConfig struct {
	// Providers are the identity providers (none: SSO login is off).
	Providers []clientapi.SSOProvider
	// TrustedClients are redirectUrl prefixes that get the login token
	// without a confirmation page (CIRRUS_OIDC_TRUSTED_CLIENTS).
	TrustedClients []string
	// AllowPrivate lets providers be on private or loopback addresses
	// (tests, or a provider inside the deployment's own network).
	AllowPrivate bool
}

// withSSO adds SSO login: the redirect and callback endpoints, and the
// m.login.sso flow of GET /login when providers are configured.
func (s *Server) withSSO() *Server {
	allow := netguard.PublicAddress
	if s.cfg.SSO.AllowPrivate {
		allow = func(netip.Addr) bool { return true }
	}
	s.ssoAPI = &clientapi.SSOAPI{Providers: s.cfg.SSO.Providers, Accounts: s.accounts,
		CallbackURL: s.cfg.Client.PublicBaseURL + clientapi.SSOCallbackPath, HTTP: netguard.NewClient(allow),
		TrustedClients: s.cfg.SSO.TrustedClients}
	if x := s.appServiceAPI; x != nil && x.Registry != nil {
		s.ssoAPI.Reserved = func(u id.UserID) bool { return x.Registry.ExclusiveUser(u) != nil }
	}
	if s.ssoAPI.Configured() {
		s.client.SSO = s.ssoAPI
	}
	return s
}
