package clientapi

import (
	"context"
	"encoding/json"
	"sort"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/accounts"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// DiscoveryConfig holds the settings of the discovery endpoints.
type DiscoveryConfig struct {
	// SupportContacts and SupportPage make /.well-known/matrix/support
	// (404 when both are empty).
	SupportContacts []SupportContact
	SupportPage     string
	// TURN: URIs, the shared secret of the TURN REST API convention and the
	// lifetime of the credentials handed out (no URIs: no TURN server).
	TurnURIs         []string
	TurnSharedSecret string
	TurnTTL          time.Duration
	// PolicyServerKeys are the public keys (algorithm → unpadded base64)
	// /.well-known/matrix/policy_server publishes (empty: 404).
	PolicyServerKeys map[string]string
	// SearchAllUsers makes every local account findable in the user
	// directory (Synapse's user_directory.search_all_users), not only the
	// users who share a room with the searcher or are in public rooms.
	SearchAllUsers bool
}

// SupportContact is one entry of /.well-known/matrix/support's contacts.
type SupportContact struct {
	MatrixID     string `json:"matrix_id,omitempty"`
	EmailAddress string `json:"email_address,omitempty"`
	Role         string `json:"role"`
}

// DiscoveryAPI serves finding people and rooms: the user directory, OpenID
// tokens for third parties, space hierarchies, room summaries and the small
// server-information endpoints.
type DiscoveryAPI struct {
	ServerName string
	Cfg        DiscoveryConfig
	T          table.Table
	Rooms      *rooms.Service
	Accounts   *accounts.Service
	Now        func() time.Time
	// RoomsAPI serves the state and timeline reads a room initial sync is
	// made of.
	RoomsAPI *RoomsAPI
	// AppServices answers third-party lookups (nil: none configured).
	AppServices *AppServiceAPI
	// RemoteHierarchy, if set, asks one of servers for a space this
	// server does not hold (federation /hierarchy): the hierarchy and
	// room summary endpoints use it for such rooms.
	RemoteHierarchy func(ctx context.Context, servers []string, room id.RoomID, suggestedOnly bool) (*RemoteSpace, error)
}

func (a *DiscoveryAPI) now() time.Time {
	if a.Now == nil {
		return time.Now()
	}
	return a.Now()
}

// Directory search limits. directoryMaxIndexRead bounds the entries of the
// all-users index one search reads (a one-letter term on a large server):
// past it the answer is limited to what was read.
const (
	directoryDefaultLimit = 10
	directoryMaxLimit     = 100
	directoryMaxIndexRead = 5000
)

// directoryUser is one result of a user directory search.
type directoryUser struct {
	UserID      id.UserID `json:"user_id"`
	DisplayName string    `json:"display_name,omitempty"`
	AvatarURL   string    `json:"avatar_url,omitempty"`
	// shared: the user is in a room the searcher is joined to.
	shared bool
}

// SearchUserDirectory serves POST /_matrix/client/v3/user_directory/search.
//
// The candidates are the joined members of the rooms the searcher is joined
// to and of the rooms published in the room directory (users who share a
// room with the searcher or are in public rooms, as the spec suggests),
// computed per request: one membership query, one index query, and one
// state query plus one batch read of member events per room — fine for a
// small community server (tens of rooms, hundreds of members), linear in
// rooms × members beyond. With DiscoveryConfig.SearchAllUsers, every local
// account (but the searcher) is a candidate too, found through the user
// directory index the accounts keep current (accounts.SearchDirectory), with
// its global display name and avatar.
//
// Matching is case- and accent-insensitive: every word of the search term
// must start a word of the user's ID or display name. Users sharing a room
// with the searcher come first, then by display name. Like Synapse, the
// users of application services' exclusive namespaces and their senders are
// left out.
func (a *DiscoveryAPI) SearchUserDirectory(r *httpapi.Request) (any, error) {
	var req struct {
		SearchTerm *string `json:"search_term"`
		Limit      *int64  `json:"limit"`
	}
	if err := r.DecodeJSON(&req); err != nil {
		return nil, err
	}
	if req.SearchTerm == nil {
		return nil, httpapi.MissingParam("search_term is required")
	}
	limit := int64(directoryDefaultLimit)
	if req.Limit != nil {
		if *req.Limit < 0 {
			return nil, httpapi.InvalidParam("limit must not be negative")
		}
		limit = min(*req.Limit, directoryMaxLimit)
	}
	ctx, searcher := r.Ctx(), r.Caller.UserID
	terms := foldWords(*req.SearchTerm)
	users, err := a.directoryCandidates(ctx, searcher)
	if err != nil {
		return nil, err
	}
	matched := map[id.UserID]*directoryUser{}
	for _, u := range users {
		if !a.hiddenFromDirectory(u.UserID) && matchesAll(terms, userWords(u)) {
			matched[u.UserID] = u
		}
	}
	truncated := false
	if a.Cfg.SearchAllUsers {
		found, more, err := a.Accounts.SearchDirectory(ctx, terms, directoryMaxIndexRead)
		if err != nil {
			return nil, err
		}
		truncated = more
		for _, e := range found {
			if a.hiddenFromDirectory(e.UserID) {
				continue
			}
			// One result per user: the global profile wins over a room's
			// member event, and the rooms tell whether the user shares
			// one with the searcher.
			du := &directoryUser{UserID: e.UserID, DisplayName: e.DisplayName, AvatarURL: e.AvatarURL}
			if ru, ok := users[e.UserID]; ok {
				du.shared = ru.shared
			}
			matched[e.UserID] = du
		}
		// As in Synapse, searching all users never finds oneself.
		delete(matched, searcher)
	}
	matches := make([]*directoryUser, 0, len(matched))
	for _, u := range matched {
		matches = append(matches, u)
	}
	sort.Slice(matches, func(i, j int) bool {
		if matches[i].shared != matches[j].shared {
			return matches[i].shared
		}
		ki, kj := sortName(matches[i]), sortName(matches[j])
		if ki != kj {
			return ki < kj
		}
		return matches[i].UserID < matches[j].UserID
	})
	limited := truncated || int64(len(matches)) > limit
	if int64(len(matches)) > limit {
		matches = matches[:limit]
	}
	return map[string]any{"results": matches, "limited": limited}, nil
}

// userWords are the words a search term is matched against.
func userWords(u *directoryUser) []string {
	return append(foldWords(string(u.UserID)), foldWords(u.DisplayName)...)
}

// hiddenFromDirectory reports whether u is a local user Synapse keeps out of
// the directory: an application service's sender or a user in one of its
// exclusive namespaces (ghosts of bridged networks).
func (a *DiscoveryAPI) hiddenFromDirectory(u id.UserID) bool {
	if a.AppServices == nil || a.AppServices.Registry == nil || u.Homeserver() != a.ServerName {
		return false
	}
	return a.AppServices.Registry.ExclusiveUser(u) != nil
}

func sortName(u *directoryUser) string {
	if u.DisplayName != "" {
		return strings.Join(foldWords(u.DisplayName), " ")
	}
	return strings.Join(foldWords(string(u.UserID)), " ")
}

// directoryCandidates gathers the users the searcher may find through rooms.
func (a *DiscoveryAPI) directoryCandidates(ctx context.Context, searcher id.UserID) (map[id.UserID]*directoryUser, error) {
	roomSet := map[id.RoomID]bool{} // room → the searcher is joined
	mine, err := a.Rooms.UserRooms(ctx, searcher)
	if err != nil {
		return nil, err
	}
	for _, m := range mine {
		if m.Membership == "join" {
			roomSet[m.RoomID] = true
		}
	}
	public, err := a.publicRoomIDs(ctx)
	if err != nil {
		return nil, err
	}
	for _, rid := range public {
		if !roomSet[rid] {
			roomSet[rid] = false
		}
	}
	out := map[id.UserID]*directoryUser{}
	for rid, joined := range roomSet {
		members, err := a.Rooms.CurrentState(ctx, rid, "m.room.member")
		if err != nil {
			return nil, err
		}
		for _, ev := range members {
			if ev.StateKey == nil || ev.Membership() != "join" {
				continue
			}
			u := id.UserID(*ev.StateKey)
			if du, ok := out[u]; ok {
				du.shared = du.shared || joined
				continue
			}
			var c struct {
				DisplayName string `json:"displayname"`
				AvatarURL   string `json:"avatar_url"`
			}
			_ = json.Unmarshal(ev.Content, &c)
			out[u] = &directoryUser{UserID: u, DisplayName: c.DisplayName, AvatarURL: c.AvatarURL, shared: joined}
		}
	}
	return out, nil
}

// publicRoomIDs lists the rooms published in the room directory.
func (a *DiscoveryAPI) publicRoomIDs(ctx context.Context) ([]id.RoomID, error) {
	q := table.Query{Index: table.IndexName, PK: rooms.PublicRoomsIndex}
	var out []id.RoomID
	for {
		page, err := a.T.Query(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, it := range page.Items {
			out = append(out, id.RoomID(it.GSK))
		}
		if page.Next == "" {
			return out, nil
		}
		q.Cursor = page.Next
	}
}

// foldWords and matchesAll are the directory's matching rules, shared
// with the all-users index so that both modes find the same users.
var (
	foldWords  = accounts.FoldWords
	matchesAll = accounts.MatchesAll
)
