package clientapi

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"slices"
	"strconv"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
)

// WellKnownSupport serves GET /.well-known/matrix/support (404 when no
// contact and no page are configured, as the spec asks).
func (a *DiscoveryAPI) WellKnownSupport(r *httpapi.Request) (any, error) {
	if len(a.Cfg.SupportContacts) == 0 && a.Cfg.SupportPage == "" {
		return nil, httpapi.NotFound("no support information configured")
	}
	out := map[string]any{}
	if len(a.Cfg.SupportContacts) > 0 {
		out["contacts"] = a.Cfg.SupportContacts
	}
	if a.Cfg.SupportPage != "" {
		out["support_page"] = a.Cfg.SupportPage
	}
	return out, nil
}

// DefaultTurnTTL is the lifetime of TURN credentials when none is configured.
const DefaultTurnTTL = 24 * time.Hour

// TurnServer serves GET /_matrix/client/v3/voip/turnServer with time-limited
// credentials of the TURN REST API convention (coturn's use-auth-secret):
// the username is "<expiry unix time>:<user ID>" and the password the
// base64 HMAC-SHA1 of the username under the shared secret. Without TURN
// configured the answer is an empty object.
func (a *DiscoveryAPI) TurnServer(r *httpapi.Request) (any, error) {
	if len(a.Cfg.TurnURIs) == 0 || a.Cfg.TurnSharedSecret == "" {
		return httpapi.Empty{}, nil
	}
	ttl := a.Cfg.TurnTTL
	if ttl <= 0 {
		ttl = DefaultTurnTTL
	}
	user := strconv.FormatInt(a.now().Add(ttl).Unix(), 10) + ":" + string(r.Caller.UserID)
	mac := hmac.New(sha1.New, []byte(a.Cfg.TurnSharedSecret))
	mac.Write([]byte(user))
	return map[string]any{
		"username": user,
		"password": base64.StdEncoding.EncodeToString(mac.Sum(nil)),
		"uris":     a.Cfg.TurnURIs,
		"ttl":      int64(ttl / time.Second),
	}, nil
}

// Third-party lookups go to the application services that declared the
// protocol (appservice.go); without one, no protocol is known and nothing
// is found.

// ThirdPartyProtocols serves GET /_matrix/client/v3/thirdparty/protocols.
func (a *DiscoveryAPI) ThirdPartyProtocols(r *httpapi.Request) (any, error) {
	if v, err := a.AppServices.thirdParty(r.Ctx(), "protocols", "", nil); err != nil || v != nil {
		return v, err
	}
	return httpapi.Empty{}, nil
}

// ThirdPartyProtocol serves GET /_matrix/client/v3/thirdparty/protocol/{protocol}
// and the location and user lookups within a protocol.
func (a *DiscoveryAPI) ThirdPartyProtocol(r *httpapi.Request) (any, error) {
	p := r.PathValue("protocol")
	kind := "protocol"
	switch {
	case strings.Contains(r.URL.Path, "/thirdparty/location/"):
		kind = "location"
	case strings.Contains(r.URL.Path, "/thirdparty/user/"):
		kind = "user"
	}
	if a.AppServices != nil && len(a.AppServices.Registry.WithProtocol(p)) > 0 {
		v, err := a.AppServices.thirdParty(r.Ctx(), kind, p, r.URL.Query())
		if err != nil {
			return nil, err
		}
		if v != nil {
			return v, nil
		}
		if kind != "protocol" {
			return []any{}, nil // the protocol exists; its services found nothing
		}
	}
	return nil, httpapi.NotFound("unknown protocol %q", p)
}

// ThirdPartyLocationByAlias serves GET /_matrix/client/v3/thirdparty/location.
func (a *DiscoveryAPI) ThirdPartyLocationByAlias(r *httpapi.Request) (any, error) {
	if r.URL.Query().Get("alias") == "" {
		return nil, httpapi.MissingParam("alias is required")
	}
	if v, err := a.AppServices.thirdParty(r.Ctx(), "location-alias", "", r.URL.Query()); err != nil || v != nil {
		return v, err
	}
	return nil, httpapi.NotFound("no third-party location for this alias")
}

// ThirdPartyUserByID serves GET /_matrix/client/v3/thirdparty/user.
func (a *DiscoveryAPI) ThirdPartyUserByID(r *httpapi.Request) (any, error) {
	if r.URL.Query().Get("userid") == "" {
		return nil, httpapi.MissingParam("userid is required")
	}
	if v, err := a.AppServices.thirdParty(r.Ctx(), "user-id", "", r.URL.Query()); err != nil || v != nil {
		return v, err
	}
	return nil, httpapi.NotFound("no third-party user for this user ID")
}

// mutualRoomsPage is how many rooms one /mutual_rooms answer lists.
const mutualRoomsPage = 100

// MutualRooms serves GET /_matrix/client/v1/mutual_rooms: the rooms both
// the caller and user_id are joined to, sorted by room ID; from is the
// last room ID of the previous page.
func (a *DiscoveryAPI) MutualRooms(r *httpapi.Request) (any, error) {
	q := r.URL.Query()
	other := id.UserID(q.Get("user_id"))
	if other == "" {
		return nil, httpapi.InvalidParam("user_id is required")
	}
	if _, _, err := other.Parse(); err != nil || !strings.HasPrefix(string(other), "@") {
		return nil, httpapi.InvalidParam("user_id %q is not a valid user ID", other)
	}
	if other == r.Caller.UserID {
		return nil, httpapi.InvalidParam("user_id is your own user ID")
	}
	from := q.Get("from")
	if from != "" && !strings.HasPrefix(from, "!") {
		return nil, httpapi.InvalidParam("unknown from token")
	}
	mine, err := a.Rooms.UserRooms(r.Ctx(), r.Caller.UserID)
	if err != nil {
		return nil, err
	}
	var joined []string
	for _, m := range mine {
		if m.Membership != "join" {
			continue
		}
		theirs, err := a.Rooms.Membership(r.Ctx(), m.RoomID, other)
		if err != nil {
			return nil, err
		}
		if theirs == "join" {
			joined = append(joined, string(m.RoomID))
		}
	}
	slices.Sort(joined)
	out := map[string]any{"count": len(joined)}
	start := 0
	if from != "" {
		start, _ = slices.BinarySearch(joined, from)
		if start < len(joined) && joined[start] == from {
			start++
		}
	}
	page := joined[start:]
	if len(page) > mutualRoomsPage {
		page = page[:mutualRoomsPage]
		out["next_batch"] = page[len(page)-1]
	}
	if page == nil {
		page = []string{}
	}
	out["joined"] = page
	return out, nil
}
