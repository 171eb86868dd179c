package server

import (
	"context"
	"net/http"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/clientapi"
	"github.com/cirrus-matrix/cirrus/core/federation"
	h "github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/media"
	"github.com/cirrus-matrix/cirrus/core/stateres"
)

// Lambda functions of the server-server API.
const (
	FnFederation     = "Federation"     // queries, joins, leaves, invites, events and state for other servers
	FnFederationSend = "FederationSend" // PUT /send: transactions from other servers (the federation hot path)
	FnKeyServer      = "KeyServer"      // our signing keys and the key notary
)

const (
	fv1 = "/_matrix/federation/v1"
	fv2 = "/_matrix/federation/v2"
	kv2 = "/_matrix/key/v2"
)

// withFederation builds the federation service and hooks it into the room
// engine (remote joins, invites and leaves; the sender on OnPersist).
func (s *Server) withFederation() *Server {
	// Rooms with several forward extremities resolve their state.
	s.rooms.Resolve = func(ctx context.Context, rv id.RoomVersion, sets []map[pdu.StateKey]id.EventID,
		fetch func(context.Context, []id.EventID) ([]*pdu.PDU, error)) (map[pdu.StateKey]id.EventID, error) {
		return stateres.Resolve(ctx, rv, sets, stateres.Fetch(fetch))
	}
	f := federation.New(s.cfg.Federation, s.cfg.Client.ServerName, s.deps.SigningKey, s.deps.Table, s.rooms,
		s.deps.FederationQueue, s.deps.Log, s.deps.Now)
	f.Profile = func(ctx context.Context, u id.UserID) (map[string]any, error) {
		p, err := s.accounts.GetProfile(ctx, u)
		if err != nil || !p.Exists || p.Deactivated {
			return nil, err
		}
		out := map[string]any{}
		for k, v := range p.Fields {
			out[k] = v
		}
		return out, nil
	}
	s.fed = f
	if s.fanout != nil {
		// Our events reach the federation outbox from the fan-out worker:
		// durable from the event's commit (nothing is lost in between).
		f.Sender.ViaFanout = true
		s.fanout.Register("federation", f.Sender.Deliver)
	}
	s.client.RemoteProfile = f.QueryRemoteProfile
	// Remote media is fetched over federation (media.FederationFetcher).
	s.media.SetFetcher(&media.FederationFetcher{Client: f.Client, AllowHTTPRedirects: s.cfg.Federation.AllowPrivate})
	if s.roomsAPI != nil {
		ra := s.roomsAPI
		ra.Backfill = f.BackfillRoom
		f.Directory = func(ctx context.Context, q federation.DirectoryQuery) (any, error) {
			return ra.ListPublicRooms(ctx, clientapi.PublicRoomsQuery(q))
		}
		ra.RemotePublicRooms = func(ctx context.Context, server string, q clientapi.PublicRoomsQuery) (any, error) {
			return f.QueryPublicRooms(ctx, server, federation.DirectoryQuery(q))
		}
		ra.RemoteTimestamp = f.RemoteTimestampToEvent
	}
	if da := s.discoveryAPI; da != nil {
		f.SpaceHierarchy = func(ctx context.Context, origin string, room id.RoomID, suggested bool) (*federation.SpaceHierarchy, error) {
			sp, err := da.ServerHierarchy(ctx, origin, room, suggested)
			if err != nil {
				return nil, err
			}
			return (*federation.SpaceHierarchy)(sp), nil
		}
		da.RemoteHierarchy = func(ctx context.Context, servers []string, room id.RoomID, suggested bool) (*clientapi.RemoteSpace, error) {
			sp, err := f.QueryHierarchy(ctx, servers, room, suggested)
			if err != nil {
				return nil, err
			}
			return (*clientapi.RemoteSpace)(sp), nil
		}
	}
	return s
}

// Federation returns the federation service (its Sender runs the
// federation queue in the all-in-one and the FederationSender Lambda).
func (s *Server) Federation() *federation.Service { return s.fed }

// serverVerifier is the X-Matrix verifier for the router (nil-safe).
func (s *Server) serverVerifier() h.ServerVerifier {
	if s.fed == nil {
		return nil
	}
	return s.fed
}

// federationRoutes are the server-server API and key server routes.
func (s *Server) federationRoutes() []h.Route {
	f := s.fed
	fed := h.AuthFederation
	return []h.Route{
		{Method: http.MethodGet, Path: kv2 + "/server", Function: FnKeyServer, Handle: f.ServerKeys},
		{Method: http.MethodGet, Path: kv2 + "/query/{serverName}", Function: FnKeyServer, Handle: f.QueryServerKeys},
		{Method: http.MethodPost, Path: kv2 + "/query", Function: FnKeyServer, Handle: f.QueryKeys},

		{Method: http.MethodPut, Path: fv1 + "/send/{txnId}", Function: FnFederationSend, Auth: fed, MaxBody: federation.MaxSendBody, Handle: f.Send},

		{Method: http.MethodGet, Path: fv1 + "/version", Function: FnFederation, Handle: f.Version},
		{Method: http.MethodGet, Path: fv1 + "/event/{eventId}", Function: FnFederation, Auth: fed, Handle: f.GetEvent},
		{Method: http.MethodGet, Path: fv1 + "/state/{roomId}", Function: FnFederation, Auth: fed, Handle: f.GetState},
		{Method: http.MethodGet, Path: fv1 + "/state_ids/{roomId}", Function: FnFederation, Auth: fed, Handle: f.GetStateIDs},
		{Method: http.MethodGet, Path: fv1 + "/event_auth/{roomId}/{eventId}", Function: FnFederation, Auth: fed, Handle: f.GetEventAuth},
		{Method: http.MethodGet, Path: fv1 + "/backfill/{roomId}", Function: FnFederation, Auth: fed, Handle: f.Backfill},
		{Method: http.MethodPost, Path: fv1 + "/get_missing_events/{roomId}", Function: FnFederation, Auth: fed, Handle: f.GetMissingEvents},
		{Method: http.MethodGet, Path: fv1 + "/make_join/{roomId}/{userId}", Function: FnFederation, Auth: fed, Handle: f.MakeJoin},
		{Method: http.MethodPut, Path: fv2 + "/send_join/{roomId}/{eventId}", Function: FnFederation, Auth: fed, Handle: f.SendJoin},
		{Method: http.MethodGet, Path: fv1 + "/make_leave/{roomId}/{userId}", Function: FnFederation, Auth: fed, Handle: f.MakeLeave},
		{Method: http.MethodPut, Path: fv2 + "/send_leave/{roomId}/{eventId}", Function: FnFederation, Auth: fed, Handle: f.SendLeave},
		{Method: http.MethodPut, Path: fv2 + "/invite/{roomId}/{eventId}", Function: FnFederation, Auth: fed, Handle: f.Invite},
		{Method: http.MethodPut, Path: fv1 + "/invite/{roomId}/{eventId}", Function: FnFederation, Auth: fed, Handle: f.InviteV1},
		{Method: http.MethodPut, Path: fv1 + "/exchange_third_party_invite/{roomId}", Function: FnFederation, Auth: fed, Handle: f.ExchangeThirdPartyInvite},
		{Method: http.MethodPut, Path: fv1 + "/3pid/onbind", Function: FnFederation, Limit: LimitJoin, Handle: f.OnBind},
		{Method: http.MethodGet, Path: fv1 + "/hierarchy/{roomId}", Function: FnFederation, Auth: fed, Handle: f.Hierarchy},
		{Method: http.MethodGet, Path: fv1 + "/timestamp_to_event/{roomId}", Function: FnFederation, Auth: fed, Handle: f.TimestampToEvent},
		{Method: http.MethodGet, Path: fv1 + "/publicRooms", Function: FnFederation, Auth: fed, Handle: f.PublicRoomsGet},
		{Method: http.MethodPost, Path: fv1 + "/publicRooms", Function: FnFederation, Auth: fed, Handle: f.PublicRoomsPost},
		{Method: http.MethodGet, Path: fv1 + "/make_knock/{roomId}/{userId}", Function: FnFederation, Auth: fed, Handle: f.MakeKnock},
		{Method: http.MethodPut, Path: fv1 + "/send_knock/{roomId}/{eventId}", Function: FnFederation, Auth: fed, Handle: f.SendKnock},
		{Method: http.MethodGet, Path: fv1 + "/query/directory", Function: FnFederation, Auth: fed, Handle: f.QueryDirectory},
		{Method: http.MethodGet, Path: fv1 + "/query/profile", Function: FnFederation, Auth: fed, Handle: f.QueryProfile},
		// End-to-end encryption: our users' devices and keys (keys.go).
		{Method: http.MethodGet, Path: fv1 + "/user/devices/{userId}", Function: FnFederation, Auth: fed, Handle: s.userKeysFed().Devices},
		{Method: http.MethodPost, Path: fv1 + "/user/keys/query", Function: FnFederation, Auth: fed, Handle: s.userKeysFed().Query},
		{Method: http.MethodPost, Path: fv1 + "/user/keys/claim", Function: FnFederation, Auth: fed, Handle: s.userKeysFed().Claim},
		// Our media for other servers: binary multipart answers, so served by the Media function.
		{Method: http.MethodGet, Path: fv1 + "/media/download/{mediaId}", Function: FnMedia, Auth: fed, Raw: s.mediaAPI.FederationDownload},
		{Method: http.MethodGet, Path: fv1 + "/media/thumbnail/{mediaId}", Function: FnMedia, Auth: fed, Raw: s.mediaAPI.FederationThumbnail},
	}
}
