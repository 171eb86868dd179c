package server

import (
	"net/http"

	h "github.com/cirrus-matrix/cirrus/core/httpapi"
)

// Lambda functions. Each route is served by exactly one of them (the
// all-in-one serves them all); template.yaml declares one AWS::Serverless::Function
// per name, which a test checks against this table.
const (
	FnDiscovery = "ClientDiscovery" // versions, well-known, capabilities, login flows
	FnAuth      = "ClientAuth"      // registration, login, logout, whoami, refresh
)

// Rate-limit classes.
const (
	LimitRegister = "register"
	LimitLogin    = "login"
)

const (
	cv3 = "/_matrix/client/v3"
	cv1 = "/_matrix/client/v1"
)

// routes is THE route table: every endpoint Cirrus serves, its handler, its
// authentication, its rate-limit class and the function that serves it.
func (s *Server) routes() []h.Route {
	c := s.client
	return []h.Route{
		// Discovery and server information.
		{Method: http.MethodGet, Path: "/_matrix/client/versions", Function: FnDiscovery, Handle: c.Versions},
		{Method: http.MethodGet, Path: "/.well-known/matrix/client", Function: FnDiscovery, Handle: c.WellKnownClient},
		{Method: http.MethodGet, Path: "/.well-known/matrix/server", Function: FnDiscovery, Handle: c.WellKnownServer},
		{Method: http.MethodGet, Path: cv3 + "/capabilities", Function: FnDiscovery, Auth: h.AuthRequired, Handle: c.Capabilities},
		{Method: http.MethodGet, Path: cv3 + "/login", Function: FnDiscovery, Handle: c.LoginFlows},

		// Accounts and sessions.
		{Method: http.MethodPost, Path: cv3 + "/register", Function: FnAuth, Limit: LimitRegister, Handle: c.Register},
		{Method: http.MethodGet, Path: cv3 + "/register/available", Function: FnAuth, Limit: LimitRegister, Handle: c.RegisterAvailable},
		{Method: http.MethodGet, Path: cv1 + "/register/m.login.registration_token/validity", Function: FnAuth, Limit: LimitRegister, Handle: c.RegistrationTokenValidity},
		{Method: http.MethodPost, Path: cv3 + "/login", Function: FnAuth, Limit: LimitLogin, Handle: c.Login},
		{Method: http.MethodPost, Path: cv3 + "/refresh", Function: FnAuth, Limit: LimitLogin, Handle: c.Refresh},
		{Method: http.MethodPost, Path: cv3 + "/logout", Function: FnAuth, Auth: h.AuthRequired, Handle: c.Logout},
		{Method: http.MethodPost, Path: cv3 + "/logout/all", Function: FnAuth, Auth: h.AuthRequired, Handle: c.LogoutAll},
		{Method: http.MethodGet, Path: cv3 + "/account/whoami", Function: FnAuth, Auth: h.AuthRequired, Handle: c.WhoAmI},
	}
}
