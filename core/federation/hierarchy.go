package federation

import (
	"context"
	"net/http"
	"net/url"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
)

// Space hierarchies over federation: GET /hierarchy served from our rooms
// (the walk itself is the client API's, through the SpaceHierarchy hook),
// and asked of other servers for spaces we do not hold.

// SpaceHierarchy is a /hierarchy answer: the room's summary with its
// children_state, the children the asking server may reach, and those it
// may not.
type SpaceHierarchy struct {
	Room         map[string]any   `json:"room"`
	Children     []map[string]any `json:"children"`
	Inaccessible []id.RoomID      `json:"inaccessible_children"`
}

// Hierarchy serves GET /_matrix/federation/v1/hierarchy/{roomId}.
func (s *Service) Hierarchy(r *httpapi.Request) (any, error) {
	room := id.RoomID(r.PathValue("roomId"))
	if len(room) < 2 || room[0] != '!' {
		return nil, httpapi.InvalidParam("invalid room id %q", room)
	}
	suggested := false
	switch r.URL.Query().Get("suggested_only") {
	case "", "false":
	case "true":
		suggested = true
	default:
		return nil, httpapi.InvalidParam("suggested_only must be true or false")
	}
	if s.SpaceHierarchy == nil {
		return nil, httpapi.NotFound("room not found")
	}
	if ok, err := s.aclAllows(r.Ctx(), room, r.Origin); err != nil {
		return nil, err
	} else if !ok {
		return nil, httpapi.Forbidden("server %s is denied by the room's server ACL", r.Origin)
	}
	return s.SpaceHierarchy(r.Ctx(), r.Origin, room, suggested)
}

// QueryHierarchy asks servers, one after the other, for a space's
// hierarchy; the first answer for that room wins.
func (s *Service) QueryHierarchy(ctx context.Context, servers []string, room id.RoomID, suggested bool) (*SpaceHierarchy, error) {
	var lastErr error = httpapi.NotFound("no server to ask about %s", room)
	cands := s.candidates(servers)
	if len(cands) > backfillServers {
		cands = cands[:backfillServers]
	}
	for _, server := range cands {
		q := url.Values{}
		if suggested {
			q.Set("suggested_only", "true")
		}
		var out SpaceHierarchy
		_, _, err := s.Client.MakeFullRequest(ctx, mfed.RequestParams{ServerName: server, Method: http.MethodGet,
			Path: mfed.URLPath{"v1", "hierarchy", room}, Query: q, Authenticate: true, ResponseJSON: &out})
		if err != nil {
			lastErr = remoteError(server, err)
			continue
		}
		if rid, _ := out.Room["room_id"].(string); rid != string(room) {
			lastErr = &httpapi.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN", Message: server + " described another room"}
			continue
		}
		return &out, nil
	}
	return nil, lastErr
}
