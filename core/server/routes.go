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
	FnAccount   = "ClientAccount"   // devices, password, deactivation, 3PIDs, profiles
	FnRooms     = "ClientRooms"     // room creation, membership, state reads, aliases
	FnSend      = "ClientSend"      // the write hot path: send, state, redact
	FnTimeline  = "ClientTimeline"  // reading events: event, messages, context, relations
)

// FnDefault answers requests that match no route (API Gateway's $default
// route): 404, or 405 for a known path with another method.
const FnDefault = FnDiscovery

// Rate-limit classes.
const (
	LimitRegister   = "register"
	LimitLogin      = "login"
	LimitSend       = "send"
	LimitJoin       = "join"
	LimitCreateRoom = "create_room"
)

const (
	cv3 = "/_matrix/client/v3"
	cv1 = "/_matrix/client/v1"
)

// routes is THE route table: every endpoint Cirrus serves, its handler, its
// authentication, its rate-limit class and the function that serves it.
func (s *Server) routes() []h.Route {
	c, rm := s.client, s.roomsAPI
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

		// Account, devices, profiles, admin.
		{Method: http.MethodPost, Path: cv1 + "/login/get_token", Function: FnAuth, Auth: h.AuthRequired, Limit: LimitLogin, Handle: c.GetLoginToken},
		{Method: http.MethodPost, Path: cv3 + "/register/email/requestToken", Function: FnAuth, Limit: LimitRegister, Handle: c.RegisterEmailRequestToken},
		{Method: http.MethodPost, Path: cv3 + "/register/msisdn/requestToken", Function: FnAuth, Limit: LimitRegister, Handle: c.RegisterMSISDNRequestToken},
		{Method: http.MethodGet, Path: "/_synapse/admin/v1/register", Function: FnAuth, Limit: LimitRegister, Handle: c.SharedSecretNonce},
		{Method: http.MethodPost, Path: "/_synapse/admin/v1/register", Function: FnAuth, Limit: LimitRegister, Handle: c.SharedSecretRegister},
		{Method: http.MethodGet, Path: cv3 + "/devices", Function: FnAccount, Auth: h.AuthRequired, Handle: c.Devices},
		{Method: http.MethodGet, Path: cv3 + "/devices/{deviceId}", Function: FnAccount, Auth: h.AuthRequired, Handle: c.Device},
		{Method: http.MethodPut, Path: cv3 + "/devices/{deviceId}", Function: FnAccount, Auth: h.AuthRequired, Handle: c.UpdateDevice},
		{Method: http.MethodDelete, Path: cv3 + "/devices/{deviceId}", Function: FnAccount, Auth: h.AuthRequired, Limit: LimitLogin, Handle: c.DeleteDevice},
		{Method: http.MethodPost, Path: cv3 + "/delete_devices", Function: FnAccount, Auth: h.AuthRequired, Limit: LimitLogin, Handle: c.DeleteDevices},
		{Method: http.MethodPost, Path: cv3 + "/account/password", Function: FnAccount, Auth: h.AuthRequired, Limit: LimitLogin, Handle: c.ChangePassword},
		{Method: http.MethodPost, Path: cv3 + "/account/deactivate", Function: FnAccount, Auth: h.AuthRequired, Limit: LimitLogin, Handle: c.Deactivate},
		{Method: http.MethodPost, Path: cv3 + "/account/password/email/requestToken", Function: FnAccount, Limit: LimitLogin, Handle: c.PasswordEmailRequestToken},
		{Method: http.MethodPost, Path: cv3 + "/account/password/msisdn/requestToken", Function: FnAccount, Limit: LimitLogin, Handle: c.PasswordMSISDNRequestToken},
		{Method: http.MethodGet, Path: cv3 + "/account/3pid", Function: FnAccount, Auth: h.AuthRequired, Handle: c.ThreePIDs},
		{Method: http.MethodPost, Path: cv3 + "/account/3pid", Function: FnAccount, Auth: h.AuthRequired, Handle: c.AddThreePIDLegacy},
		{Method: http.MethodPost, Path: cv3 + "/account/3pid/add", Function: FnAccount, Auth: h.AuthRequired, Handle: c.AddThreePID},
		{Method: http.MethodPost, Path: cv3 + "/account/3pid/bind", Function: FnAccount, Auth: h.AuthRequired, Handle: c.BindThreePID},
		{Method: http.MethodPost, Path: cv3 + "/account/3pid/delete", Function: FnAccount, Auth: h.AuthRequired, Handle: c.DeleteThreePID},
		{Method: http.MethodPost, Path: cv3 + "/account/3pid/unbind", Function: FnAccount, Auth: h.AuthRequired, Handle: c.UnbindThreePID},
		{Method: http.MethodPost, Path: cv3 + "/account/3pid/email/requestToken", Function: FnAccount, Limit: LimitLogin, Handle: c.Account3PIDEmailRequestToken},
		{Method: http.MethodPost, Path: cv3 + "/account/3pid/msisdn/requestToken", Function: FnAccount, Limit: LimitLogin, Handle: c.Account3PIDMSISDNRequestToken},
		{Method: http.MethodGet, Path: cv3 + "/profile/{userId}", Function: FnAccount, Handle: c.Profile},
		{Method: http.MethodGet, Path: cv3 + "/profile/{userId}/{keyName}", Function: FnAccount, Handle: c.ProfileField},
		{Method: http.MethodPut, Path: cv3 + "/profile/{userId}/{keyName}", Function: FnAccount, Auth: h.AuthRequired, Handle: c.SetProfileField},
		{Method: http.MethodDelete, Path: cv3 + "/profile/{userId}/{keyName}", Function: FnAccount, Auth: h.AuthRequired, Handle: c.DeleteProfileField},

		// Rooms: creation, membership, state, aliases.
		{Method: http.MethodPost, Path: cv3 + "/createRoom", Function: FnRooms, Auth: h.AuthRequired, Limit: LimitCreateRoom, Handle: rm.CreateRoom},
		{Method: http.MethodPost, Path: cv3 + "/join/{roomIdOrAlias}", Function: FnRooms, Auth: h.AuthRequired, Limit: LimitJoin, Handle: rm.JoinByIDOrAlias},
		{Method: http.MethodPost, Path: cv3 + "/knock/{roomIdOrAlias}", Function: FnRooms, Auth: h.AuthRequired, Limit: LimitJoin, Handle: rm.Knock},
		{Method: http.MethodPost, Path: cv3 + "/rooms/{roomId}/join", Function: FnRooms, Auth: h.AuthRequired, Limit: LimitJoin, Handle: rm.Join},
		{Method: http.MethodPost, Path: cv3 + "/rooms/{roomId}/invite", Function: FnRooms, Auth: h.AuthRequired, Limit: LimitJoin, Handle: rm.Invite},
		{Method: http.MethodPost, Path: cv3 + "/rooms/{roomId}/leave", Function: FnRooms, Auth: h.AuthRequired, Handle: rm.Leave},
		{Method: http.MethodPost, Path: cv3 + "/rooms/{roomId}/forget", Function: FnRooms, Auth: h.AuthRequired, Handle: rm.Forget},
		{Method: http.MethodPost, Path: cv3 + "/rooms/{roomId}/kick", Function: FnRooms, Auth: h.AuthRequired, Handle: rm.Kick},
		{Method: http.MethodPost, Path: cv3 + "/rooms/{roomId}/ban", Function: FnRooms, Auth: h.AuthRequired, Handle: rm.Ban},
		{Method: http.MethodPost, Path: cv3 + "/rooms/{roomId}/unban", Function: FnRooms, Auth: h.AuthRequired, Handle: rm.Unban},
		{Method: http.MethodGet, Path: cv3 + "/joined_rooms", Function: FnRooms, Auth: h.AuthRequired, Handle: rm.JoinedRooms},
		{Method: http.MethodGet, Path: cv3 + "/rooms/{roomId}/joined_members", Function: FnRooms, Auth: h.AuthRequired, Handle: rm.JoinedMembers},
		{Method: http.MethodGet, Path: cv3 + "/rooms/{roomId}/members", Function: FnRooms, Auth: h.AuthRequired, Handle: rm.Members},
		{Method: http.MethodGet, Path: cv3 + "/rooms/{roomId}/state", Function: FnRooms, Auth: h.AuthRequired, Handle: rm.GetState},
		{Method: http.MethodGet, Path: cv3 + "/rooms/{roomId}/state/{eventType}/{stateKey...}", Function: FnRooms, Auth: h.AuthRequired, Handle: rm.GetStateEvent},

		// Sending: the hot write path.
		{Method: http.MethodPut, Path: cv3 + "/rooms/{roomId}/send/{eventType}/{txnId}", Function: FnSend, Auth: h.AuthRequired, Limit: LimitSend, Handle: rm.Send},
		{Method: http.MethodPut, Path: cv3 + "/rooms/{roomId}/state/{eventType}/{stateKey...}", Function: FnSend, Auth: h.AuthRequired, Limit: LimitSend, Handle: rm.PutState},
		{Method: http.MethodPut, Path: cv3 + "/rooms/{roomId}/redact/{eventId}/{txnId}", Function: FnSend, Auth: h.AuthRequired, Limit: LimitSend, Handle: rm.Redact},

		// Reading the timeline.
		{Method: http.MethodGet, Path: cv3 + "/rooms/{roomId}/event/{eventId}", Function: FnTimeline, Auth: h.AuthRequired, Handle: rm.GetEvent},
		{Method: http.MethodGet, Path: cv3 + "/rooms/{roomId}/messages", Function: FnTimeline, Auth: h.AuthRequired, Handle: rm.Messages},
		// (more rooms routes: above this line)

		// Sync, filters, account data, ephemeral events, to-device.
		// (sync routes: above this line)

		// End-to-end encryption keys.
		// (keys routes: above this line)

		// Media.
		// (media routes: above this line)
	}
}
