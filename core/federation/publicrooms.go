package federation

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"

	mfed "maunium.net/go/mautrix/federation"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/rooms"
)

// The room directory over federation: our published rooms for other
// servers, and other servers' directories for our clients.

// DirectoryQuery is a /publicRooms query (rooms.PublicRoomsQuery: the same
// shape in both APIs).
type DirectoryQuery = rooms.PublicRoomsQuery

// PublicRoomsGet serves GET /_matrix/federation/v1/publicRooms.
func (s *Service) PublicRoomsGet(r *httpapi.Request) (any, error) {
	q, err := rooms.PublicRoomsQueryOf(r)
	if err != nil {
		return nil, err
	}
	return s.localDirectory(r.Ctx(), q)
}

// PublicRoomsPost serves POST /_matrix/federation/v1/publicRooms.
func (s *Service) PublicRoomsPost(r *httpapi.Request) (any, error) {
	var q DirectoryQuery
	if err := r.DecodeJSON(&q); err != nil {
		return nil, err
	}
	if q.Limit != nil && *q.Limit < 0 {
		return nil, httpapi.InvalidParam("limit must not be negative")
	}
	return s.localDirectory(r.Ctx(), q)
}

func (s *Service) localDirectory(ctx context.Context, q DirectoryQuery) (any, error) {
	if s.Directory == nil {
		return nil, httpapi.NotFound("this server has no room directory")
	}
	return s.Directory(ctx, q)
}

// QueryPublicRooms asks another server for its room directory (a signed
// request): POST, which carries the filter, falling back to GET for a
// server that does not serve POST (a filter is then applied by nobody, so
// a filtered query is not retried).
func (s *Service) QueryPublicRooms(ctx context.Context, server string, q DirectoryQuery) (json.RawMessage, error) {
	if !validServerName(server) {
		return nil, httpapi.InvalidParam("invalid server name %q", server)
	}
	var out json.RawMessage
	err := s.Client.MakeRequest(ctx, server, true, http.MethodPost, mfed.URLPath{"v1", "publicRooms"}, q, &out)
	if err != nil && v2Unknown(err) && q.Filter == nil {
		vals := url.Values{}
		if q.Limit != nil {
			vals.Set("limit", strconv.FormatInt(*q.Limit, 10))
		}
		if q.Since != "" {
			vals.Set("since", q.Since)
		}
		if q.IncludeAllNetworks {
			vals.Set("include_all_networks", "true")
		}
		if q.ThirdPartyInstance != "" {
			vals.Set("third_party_instance_id", q.ThirdPartyInstance)
		}
		_, _, err = s.Client.MakeFullRequest(ctx, mfed.RequestParams{ServerName: server, Method: http.MethodGet,
			Path: mfed.URLPath{"v1", "publicRooms"}, Query: vals, Authenticate: true, ResponseJSON: &out})
	}
	if err != nil {
		return nil, remoteError(server, err)
	}
	var check struct {
		Chunk []json.RawMessage `json:"chunk"`
	}
	if json.Unmarshal(out, &check) != nil || check.Chunk == nil {
		return nil, &httpapi.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN", Message: server + " answered with no room directory"}
	}
	return out, nil
}
