package server

import (
	"net/http"

	"github.com/cirrus-matrix/cirrus/core/clientapi"
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
	FnKeys      = "ClientKeys"      // end-to-end encryption: device and cross-signing keys, key backup
	FnMedia     = "Media"           // content repository: uploads, downloads, thumbnails, URL previews
	FnSync      = "ClientSync"      // /sync and peeking (/events): the held long-polls stay small
	FnUserData  = "ClientUserData"  // filters, account data, tags, typing, receipts, read markers, presence, to-device
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
	LimitMedia      = "media"   // uploads and /create
	LimitPreview    = "preview" // URL previews (each may fetch from the internet)
)

const (
	cv3 = "/_matrix/client/v3"
	cv1 = "/_matrix/client/v1"
	mv3 = "/_matrix/media/v3"
	mv1 = "/_matrix/media/v1"
)

// routes is THE route table: every endpoint Cirrus serves, its handler, its
// authentication, its rate-limit class and the function that serves it.
func (s *Server) routes() []h.Route {
	c, rm := s.client, s.roomsAPI
	k := s.keysAPI
	return append([]h.Route{
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
		// SSO login through OpenID Connect providers (sso.go); OAuth 2.0
		// (next-generation auth) metadata: not supported, the spec's 404.
		{Method: http.MethodGet, Path: cv3 + "/login/sso/redirect", Function: FnAuth, Limit: LimitLogin, Raw: s.ssoAPI.Redirect},
		{Method: http.MethodGet, Path: cv3 + "/login/sso/redirect/{idpId}", Function: FnAuth, Limit: LimitLogin, Raw: s.ssoAPI.Redirect},
		{Method: http.MethodGet, Path: clientapi.SSOCallbackPath, Function: FnAuth, Limit: LimitLogin, Raw: s.ssoAPI.Callback},
		{Method: http.MethodGet, Path: cv3 + "/auth/m.login.sso/fallback/web", Function: FnAuth, Limit: LimitLogin, Raw: s.ssoAPI.UIAFallback},
		{Method: http.MethodGet, Path: cv1 + "/auth_metadata", Function: FnDiscovery, Handle: clientapi.AuthMetadata},

		// Account, devices, profiles, admin.
		{Method: http.MethodPost, Path: cv1 + "/login/get_token", Function: FnAuth, Auth: h.AuthRequired, Limit: LimitLogin, Handle: c.GetLoginToken},
		{Method: http.MethodPost, Path: cv3 + "/register/email/requestToken", Function: FnAuth, Limit: LimitRegister, Handle: c.RegisterEmailRequestToken},
		{Method: http.MethodPost, Path: cv3 + "/register/msisdn/requestToken", Function: FnAuth, Limit: LimitRegister, Handle: c.RegisterMSISDNRequestToken},
		{Method: http.MethodGet, Path: "/_synapse/admin/v1/register", Function: FnAuth, Limit: LimitRegister, Handle: c.SharedSecretNonce},
		{Method: http.MethodPost, Path: "/_synapse/admin/v1/register", Function: FnAuth, Limit: LimitRegister, Handle: c.SharedSecretRegister},
		{Method: http.MethodGet, Path: cv3 + "/admin/whois/{userId}", Function: FnAccount, Auth: h.AuthRequired, Handle: c.Whois},
		{Method: http.MethodGet, Path: cv1 + "/admin/suspend/{userId}", Function: FnAccount, Auth: h.AuthRequired, Handle: c.GetSuspended},
		{Method: http.MethodPut, Path: cv1 + "/admin/suspend/{userId}", Function: FnAccount, Auth: h.AuthRequired, Handle: c.PutSuspended},
		{Method: http.MethodGet, Path: cv1 + "/admin/lock/{userId}", Function: FnAccount, Auth: h.AuthRequired, Handle: c.GetLocked},
		{Method: http.MethodPut, Path: cv1 + "/admin/lock/{userId}", Function: FnAccount, Auth: h.AuthRequired, Handle: c.PutLocked},
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
		// The empty state key (".../state/m.room.name/"): API Gateway's greedy
		// {stateKey+} needs a non-empty rest and it ignores the trailing slash,
		// so this route carries those requests to the function.
		{Method: http.MethodGet, Path: cv3 + "/rooms/{roomId}/state/{eventType}", Function: FnRooms, Auth: h.AuthRequired, Handle: rm.GetStateEvent},

		// Sending: the hot write path.
		{Method: http.MethodPut, Path: cv3 + "/rooms/{roomId}/send/{eventType}/{txnId}", Function: FnSend, Auth: h.AuthRequired, Limit: LimitSend, Handle: rm.Send},
		{Method: http.MethodPut, Path: cv3 + "/rooms/{roomId}/state/{eventType}/{stateKey...}", Function: FnSend, Auth: h.AuthRequired, Limit: LimitSend, Handle: rm.PutState},
		{Method: http.MethodPut, Path: cv3 + "/rooms/{roomId}/state/{eventType}", Function: FnSend, Auth: h.AuthRequired, Limit: LimitSend, Handle: rm.PutState}, // empty state key (above)
		{Method: http.MethodPut, Path: cv3 + "/rooms/{roomId}/redact/{eventId}/{txnId}", Function: FnSend, Auth: h.AuthRequired, Limit: LimitSend, Handle: rm.Redact},

		// Reading the timeline.
		{Method: http.MethodGet, Path: cv3 + "/rooms/{roomId}/event/{eventId}", Function: FnTimeline, Auth: h.AuthRequired, Handle: rm.GetEvent},
		{Method: http.MethodGet, Path: cv3 + "/rooms/{roomId}/messages", Function: FnTimeline, Auth: h.AuthRequired, Handle: rm.Messages},
		{Method: http.MethodGet, Path: cv3 + "/rooms/{roomId}/context/{eventId}", Function: FnTimeline, Auth: h.AuthRequired, Handle: rm.Context},
		{Method: http.MethodGet, Path: cv1 + "/rooms/{roomId}/relations/{eventId}", Function: FnTimeline, Auth: h.AuthRequired, Handle: rm.Relations},
		{Method: http.MethodGet, Path: cv1 + "/rooms/{roomId}/relations/{eventId}/{relType}", Function: FnTimeline, Auth: h.AuthRequired, Handle: rm.Relations},
		{Method: http.MethodGet, Path: cv1 + "/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}", Function: FnTimeline, Auth: h.AuthRequired, Handle: rm.Relations},
		{Method: http.MethodGet, Path: cv1 + "/rooms/{roomId}/threads", Function: FnTimeline, Auth: h.AuthRequired, Handle: rm.Threads},
		{Method: http.MethodGet, Path: cv1 + "/rooms/{roomId}/timestamp_to_event", Function: FnTimeline, Auth: h.AuthRequired, Handle: rm.TimestampToEvent},
		{Method: http.MethodPost, Path: cv3 + "/search", Function: FnTimeline, Auth: h.AuthRequired, Handle: s.searchAPI.Search},

		// Aliases, the published room directory, upgrades, reports.
		{Method: http.MethodPut, Path: cv3 + "/directory/room/{roomAlias}", Function: FnRooms, Auth: h.AuthRequired, Handle: rm.SetAlias},
		{Method: http.MethodGet, Path: cv3 + "/directory/room/{roomAlias}", Function: FnRooms, Handle: rm.GetAlias},
		{Method: http.MethodDelete, Path: cv3 + "/directory/room/{roomAlias}", Function: FnRooms, Auth: h.AuthRequired, Handle: rm.DeleteAlias},
		{Method: http.MethodGet, Path: cv3 + "/rooms/{roomId}/aliases", Function: FnRooms, Auth: h.AuthRequired, Handle: rm.RoomAliases},
		{Method: http.MethodGet, Path: cv3 + "/directory/list/room/{roomId}", Function: FnRooms, Handle: rm.GetDirectoryVisibility},
		{Method: http.MethodPut, Path: cv3 + "/directory/list/room/{roomId}", Function: FnRooms, Auth: h.AuthRequired, Handle: rm.SetDirectoryVisibility},
		{Method: http.MethodGet, Path: cv3 + "/publicRooms", Function: FnRooms, Handle: rm.PublicRoomsGet},
		{Method: http.MethodPost, Path: cv3 + "/publicRooms", Function: FnRooms, Auth: h.AuthRequired, Handle: rm.PublicRoomsPost},
		{Method: http.MethodPost, Path: cv3 + "/rooms/{roomId}/upgrade", Function: FnRooms, Auth: h.AuthRequired, Limit: LimitCreateRoom, Handle: rm.UpgradeRoom},
		{Method: http.MethodPost, Path: cv3 + "/rooms/{roomId}/report/{eventId}", Function: FnRooms, Auth: h.AuthRequired, Handle: rm.ReportEvent},
		{Method: http.MethodPost, Path: cv3 + "/rooms/{roomId}/report", Function: FnRooms, Auth: h.AuthRequired, Handle: rm.ReportRoom},
		{Method: http.MethodPost, Path: cv3 + "/users/{userId}/report", Function: FnRooms, Auth: h.AuthRequired, Limit: LimitSend, Handle: s.discoveryAPI.ReportUser},
		// Discovery: user directory, OpenID, hierarchy, summaries, misc.
		{Method: http.MethodPost, Path: cv3 + "/user_directory/search", Function: FnRooms, Auth: h.AuthRequired, Handle: s.discoveryAPI.SearchUserDirectory},
		{Method: http.MethodGet, Path: cv1 + "/rooms/{roomId}/hierarchy", Function: FnRooms, Auth: h.AuthRequired, Handle: s.discoveryAPI.Hierarchy},
		{Method: http.MethodGet, Path: cv1 + "/room_summary/{roomIdOrAlias}", Function: FnRooms, Auth: h.AuthOptional, Handle: s.discoveryAPI.RoomSummary},
		{Method: http.MethodGet, Path: cv3 + "/rooms/{roomId}/initialSync", Function: FnTimeline, Auth: h.AuthRequired, Handle: s.discoveryAPI.RoomInitialSync},
		{Method: http.MethodGet, Path: cv1 + "/mutual_rooms", Function: FnRooms, Auth: h.AuthRequired, Handle: s.discoveryAPI.MutualRooms},
		{Method: http.MethodPost, Path: cv3 + "/user/{userId}/openid/request_token", Function: FnUserData, Auth: h.AuthRequired, Handle: s.discoveryAPI.RequestOpenIDToken},
		{Method: http.MethodGet, Path: fv1 + "/openid/userinfo", Function: FnFederation, Handle: s.discoveryAPI.OpenIDUserInfo}, // the token is the authentication
		{Method: http.MethodGet, Path: "/.well-known/matrix/support", Function: FnDiscovery, Handle: s.discoveryAPI.WellKnownSupport},
		{Method: http.MethodGet, Path: "/.well-known/matrix/policy_server", Function: FnDiscovery, Handle: s.discoveryAPI.PolicyServer},
		{Method: http.MethodGet, Path: cv3 + "/voip/turnServer", Function: FnUserData, Auth: h.AuthRequired, Handle: s.discoveryAPI.TurnServer},
		{Method: http.MethodGet, Path: cv3 + "/thirdparty/protocols", Function: FnDiscovery, Auth: h.AuthRequired, Handle: s.discoveryAPI.ThirdPartyProtocols},
		{Method: http.MethodGet, Path: cv3 + "/thirdparty/protocol/{protocol}", Function: FnDiscovery, Auth: h.AuthRequired, Handle: s.discoveryAPI.ThirdPartyProtocol},
		{Method: http.MethodGet, Path: cv3 + "/thirdparty/location/{protocol}", Function: FnDiscovery, Auth: h.AuthRequired, Handle: s.discoveryAPI.ThirdPartyProtocol},
		{Method: http.MethodGet, Path: cv3 + "/thirdparty/user/{protocol}", Function: FnDiscovery, Auth: h.AuthRequired, Handle: s.discoveryAPI.ThirdPartyProtocol},
		{Method: http.MethodGet, Path: cv3 + "/thirdparty/location", Function: FnDiscovery, Auth: h.AuthRequired, Handle: s.discoveryAPI.ThirdPartyLocationByAlias},
		{Method: http.MethodGet, Path: cv3 + "/thirdparty/user", Function: FnDiscovery, Auth: h.AuthRequired, Handle: s.discoveryAPI.ThirdPartyUserByID},
		// (more rooms routes: above this line)

		// Sync, filters, account data, ephemeral events, to-device.
		{Method: http.MethodGet, Path: cv3 + "/sync", Function: FnSync, Auth: h.AuthRequired, Handle: s.syncAPI.Sync},
		// Simplified sliding sync, MSC4186 (sliding.go): Element X's sync.
		{Method: http.MethodPost, Path: "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", Function: FnSync, Auth: h.AuthRequired, Handle: s.sliding.Serve},
		{Method: http.MethodGet, Path: cv3 + "/events", Function: FnSync, Auth: h.AuthRequired, Handle: s.peekAPI.Events}, // peeking (peek.go): a long-poll too
		{Method: http.MethodPost, Path: cv3 + "/user/{userId}/filter", Function: FnUserData, Auth: h.AuthRequired, Handle: s.userDataAPI.PostFilter},
		{Method: http.MethodGet, Path: cv3 + "/user/{userId}/filter/{filterId}", Function: FnUserData, Auth: h.AuthRequired, Handle: s.userDataAPI.GetFilter},
		{Method: http.MethodPut, Path: cv3 + "/user/{userId}/account_data/{type}", Function: FnUserData, Auth: h.AuthRequired, Handle: s.userDataAPI.PutAccountData},
		{Method: http.MethodGet, Path: cv3 + "/user/{userId}/account_data/{type}", Function: FnUserData, Auth: h.AuthRequired, Handle: s.userDataAPI.GetAccountData},
		{Method: http.MethodPut, Path: cv3 + "/user/{userId}/rooms/{roomId}/account_data/{type}", Function: FnUserData, Auth: h.AuthRequired, Handle: s.userDataAPI.PutAccountData},
		{Method: http.MethodGet, Path: cv3 + "/user/{userId}/rooms/{roomId}/account_data/{type}", Function: FnUserData, Auth: h.AuthRequired, Handle: s.userDataAPI.GetAccountData},
		{Method: http.MethodGet, Path: cv3 + "/user/{userId}/rooms/{roomId}/tags", Function: FnUserData, Auth: h.AuthRequired, Handle: s.userDataAPI.GetTags},
		{Method: http.MethodPut, Path: cv3 + "/user/{userId}/rooms/{roomId}/tags/{tag}", Function: FnUserData, Auth: h.AuthRequired, Handle: s.userDataAPI.PutTag},
		{Method: http.MethodDelete, Path: cv3 + "/user/{userId}/rooms/{roomId}/tags/{tag}", Function: FnUserData, Auth: h.AuthRequired, Handle: s.userDataAPI.DeleteTag},
		{Method: http.MethodPut, Path: cv3 + "/rooms/{roomId}/typing/{userId}", Function: FnUserData, Auth: h.AuthRequired, Handle: s.userDataAPI.PutTyping},
		{Method: http.MethodPost, Path: cv3 + "/rooms/{roomId}/receipt/{receiptType}/{eventId}", Function: FnUserData, Auth: h.AuthRequired, Handle: s.userDataAPI.PostReceipt},
		{Method: http.MethodPost, Path: cv3 + "/rooms/{roomId}/read_markers", Function: FnUserData, Auth: h.AuthRequired, Handle: s.userDataAPI.PostReadMarkers},
		{Method: http.MethodPut, Path: cv3 + "/presence/{userId}/status", Function: FnUserData, Auth: h.AuthRequired, Handle: s.userDataAPI.PutPresence},
		{Method: http.MethodGet, Path: cv3 + "/presence/{userId}/status", Function: FnUserData, Auth: h.AuthRequired, Handle: s.userDataAPI.GetPresence},
		{Method: http.MethodPut, Path: cv3 + "/sendToDevice/{eventType}/{txnId}", Function: FnUserData, Auth: h.AuthRequired, Handle: s.userDataAPI.PutSendToDevice},
		// Push rules, pushers, notifications.
		// One pattern per method for every /pushrules path (the spec's
		// "/pushrules/" and "/pushrules/global/" end in a slash, which a
		// ServeMux route cannot name without matching the whole subtree).
		{Method: http.MethodGet, Path: cv3 + "/pushrules/{path...}", Function: FnUserData, Auth: h.AuthRequired, Handle: s.pushAPI.GetPushRules},
		// The bare "/pushrules/": API Gateway's greedy {path+} needs a
		// non-empty rest and a route may not end in "/", but it matches
		// "/pushrules/" to the route "/pushrules" (trailing slashes are
		// ignored when routing). The handler sees the path as sent.
		{Method: http.MethodGet, Path: cv3 + "/pushrules", Function: FnUserData, Auth: h.AuthRequired, Handle: s.pushAPI.GetPushRules},
		{Method: http.MethodPut, Path: cv3 + "/pushrules/{path...}", Function: FnUserData, Auth: h.AuthRequired, Handle: s.pushAPI.PutPushRule},
		{Method: http.MethodDelete, Path: cv3 + "/pushrules/{path...}", Function: FnUserData, Auth: h.AuthRequired, Handle: s.pushAPI.DeletePushRule},
		{Method: http.MethodGet, Path: cv3 + "/notifications", Function: FnUserData, Auth: h.AuthRequired, Handle: s.pushAPI.GetNotifications},
		{Method: http.MethodGet, Path: cv3 + "/pushers", Function: FnUserData, Auth: h.AuthRequired, Handle: s.pushAPI.GetPushers},
		{Method: http.MethodPost, Path: cv3 + "/pushers/set", Function: FnUserData, Auth: h.AuthRequired, Handle: s.pushAPI.PostPushersSet},
		// (sync routes: above this line)

		// End-to-end encryption keys.
		{Method: http.MethodPost, Path: cv3 + "/keys/upload", Function: FnKeys, Auth: h.AuthRequired, Handle: k.UploadKeys},
		{Method: http.MethodPost, Path: cv3 + "/keys/query", Function: FnKeys, Auth: h.AuthRequired, Handle: k.QueryKeys},
		{Method: http.MethodPost, Path: cv3 + "/keys/claim", Function: FnKeys, Auth: h.AuthRequired, Handle: k.ClaimKeys},
		{Method: http.MethodGet, Path: cv3 + "/keys/changes", Function: FnKeys, Auth: h.AuthRequired, Handle: k.KeyChanges},
		{Method: http.MethodPost, Path: cv3 + "/keys/device_signing/upload", Function: FnKeys, Auth: h.AuthRequired, Limit: LimitLogin, Handle: k.UploadCrossSigningKeys},
		{Method: http.MethodPost, Path: cv3 + "/keys/signatures/upload", Function: FnKeys, Auth: h.AuthRequired, Handle: k.UploadSignatures},
		{Method: http.MethodPost, Path: cv3 + "/room_keys/version", Function: FnKeys, Auth: h.AuthRequired, Handle: k.CreateBackupVersion},
		{Method: http.MethodGet, Path: cv3 + "/room_keys/version", Function: FnKeys, Auth: h.AuthRequired, Handle: k.LatestBackupVersion},
		{Method: http.MethodGet, Path: cv3 + "/room_keys/version/{version}", Function: FnKeys, Auth: h.AuthRequired, Handle: k.GetBackupVersion},
		{Method: http.MethodPut, Path: cv3 + "/room_keys/version/{version}", Function: FnKeys, Auth: h.AuthRequired, Handle: k.UpdateBackupVersion},
		{Method: http.MethodDelete, Path: cv3 + "/room_keys/version/{version}", Function: FnKeys, Auth: h.AuthRequired, Handle: k.DeleteBackupVersion},
		{Method: http.MethodPut, Path: cv3 + "/room_keys/keys", Function: FnKeys, Auth: h.AuthRequired, Handle: k.PutRoomKeys},
		{Method: http.MethodGet, Path: cv3 + "/room_keys/keys", Function: FnKeys, Auth: h.AuthRequired, Handle: k.GetRoomKeys},
		{Method: http.MethodDelete, Path: cv3 + "/room_keys/keys", Function: FnKeys, Auth: h.AuthRequired, Handle: k.DeleteRoomKeys},
		{Method: http.MethodPut, Path: cv3 + "/room_keys/keys/{roomId}", Function: FnKeys, Auth: h.AuthRequired, Handle: k.PutRoomKeys},
		{Method: http.MethodGet, Path: cv3 + "/room_keys/keys/{roomId}", Function: FnKeys, Auth: h.AuthRequired, Handle: k.GetRoomKeys},
		{Method: http.MethodDelete, Path: cv3 + "/room_keys/keys/{roomId}", Function: FnKeys, Auth: h.AuthRequired, Handle: k.DeleteRoomKeys},
		{Method: http.MethodPut, Path: cv3 + "/room_keys/keys/{roomId}/{sessionId}", Function: FnKeys, Auth: h.AuthRequired, Handle: k.PutRoomKeys},
		{Method: http.MethodGet, Path: cv3 + "/room_keys/keys/{roomId}/{sessionId}", Function: FnKeys, Auth: h.AuthRequired, Handle: k.GetRoomKeys},
		{Method: http.MethodDelete, Path: cv3 + "/room_keys/keys/{roomId}/{sessionId}", Function: FnKeys, Auth: h.AuthRequired, Handle: k.DeleteRoomKeys},
		// Dehydrated devices (MSC3814, unstable prefix; keys.go).
		{Method: http.MethodPut, Path: msc3814 + "/dehydrated_device", Function: FnKeys, Auth: h.AuthRequired, Handle: s.dehydratedAPI.Put},
		{Method: http.MethodGet, Path: msc3814 + "/dehydrated_device", Function: FnKeys, Auth: h.AuthRequired, Handle: s.dehydratedAPI.Get},
		{Method: http.MethodDelete, Path: msc3814 + "/dehydrated_device", Function: FnKeys, Auth: h.AuthRequired, Handle: s.dehydratedAPI.Delete},
		// {deviceId}/events: the id is a base64 key that may hold "/", which
		// the Lambda path (algnhsa) unescapes, so the rest is matched whole.
		{Method: http.MethodPost, Path: msc3814 + "/dehydrated_device/{rest...}", Function: FnKeys, Auth: h.AuthRequired, Handle: s.dehydratedAPI.Events},
		{Method: http.MethodGet, Path: msc3814 + "/dehydrated_device/{rest...}", Function: FnKeys, Auth: h.AuthRequired, Handle: s.dehydratedAPI.Events},
		// (keys routes: above this line)

		// Media. Uploads and downloads stream (Raw); mv3 paths without
		// authentication are the deprecated ones, frozen unless
		// CIRRUS_MEDIA_LEGACY_UNAUTHENTICATED is set.
		{Method: http.MethodPost, Path: mv3 + "/upload", Function: FnMedia, Auth: h.AuthRequired, Limit: LimitMedia, Raw: s.mediaAPI.Upload},
		{Method: http.MethodPut, Path: mv3 + "/upload/{serverName}/{mediaId}", Function: FnMedia, Auth: h.AuthRequired, Limit: LimitMedia, Raw: s.mediaAPI.UploadTo},
		{Method: http.MethodPost, Path: mv1 + "/create", Function: FnMedia, Auth: h.AuthRequired, Limit: LimitMedia, Handle: s.mediaAPI.Create},
		{Method: http.MethodGet, Path: cv1 + "/media/config", Function: FnMedia, Auth: h.AuthRequired, Handle: s.mediaAPI.Config},
		{Method: http.MethodGet, Path: cv1 + "/media/download/{serverName}/{mediaId}", Function: FnMedia, Auth: h.AuthRequired, Raw: s.mediaAPI.Download},
		{Method: http.MethodGet, Path: cv1 + "/media/download/{serverName}/{mediaId}/{fileName}", Function: FnMedia, Auth: h.AuthRequired, Raw: s.mediaAPI.Download},
		{Method: http.MethodGet, Path: cv1 + "/media/thumbnail/{serverName}/{mediaId}", Function: FnMedia, Auth: h.AuthRequired, Raw: s.mediaAPI.Thumbnail},
		{Method: http.MethodGet, Path: cv1 + "/media/preview_url", Function: FnMedia, Auth: h.AuthRequired, Limit: LimitPreview, Handle: s.mediaAPI.Preview},
		{Method: http.MethodGet, Path: mv3 + "/config", Function: FnMedia, Auth: h.AuthRequired, Handle: s.mediaAPI.Config},
		{Method: http.MethodGet, Path: mv3 + "/download/{serverName}/{mediaId}", Function: FnMedia, Raw: s.mediaAPI.DownloadLegacy},
		{Method: http.MethodGet, Path: mv3 + "/download/{serverName}/{mediaId}/{fileName}", Function: FnMedia, Raw: s.mediaAPI.DownloadLegacy},
		{Method: http.MethodGet, Path: mv3 + "/thumbnail/{serverName}/{mediaId}", Function: FnMedia, Raw: s.mediaAPI.ThumbnailLegacy},
		{Method: http.MethodGet, Path: mv3 + "/preview_url", Function: FnMedia, Auth: h.AuthRequired, Limit: LimitPreview, Handle: s.mediaAPI.Preview},
		{Method: http.MethodPost, Path: "/_matrix/media/unstable/com.beeper.msc3870/upload/{serverName}/{mediaId}/complete", Function: FnMedia, Auth: h.AuthRequired, Limit: LimitMedia, Handle: s.mediaAPI.CompleteUpload},
		// (media routes: above this line)
	}, append(s.federationRoutes(), s.appServiceRoutes()...)...) // server-server API and keys: federation.go; application services: appservice.go
}
