package clientapi

import (
	"context"
	"encoding/json"
	"sort"
	"strings"
	"time"
	"unicode"

	"golang.org/x/text/unicode/norm"
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

// Directory search limits.
const (
	directoryDefaultLimit = 10
	directoryMaxLimit     = 100
)

// directoryUser is one result of a user directory search.
type directoryUser struct {
	UserID      id.UserID `json:"user_id"`
	DisplayName string    `json:"display_name,omitempty"`
	AvatarURL   string    `json:"avatar_url,omitempty"`
	words       []string
}

// SearchUserDirectory serves POST /_matrix/client/v3/user_directory/search.
//
// The directory is computed per request rather than kept as an index: the
// candidates are the joined members of the rooms the searcher is joined to
// and of the rooms published in the room directory (users who share a room
// with the searcher or are in public rooms, as the spec suggests). That
// costs one membership query, one index query, and one state query plus one
// batch read of member events per room — fine for a small community server
// (tens of rooms, hundreds of members), linear in rooms × members beyond.
// Matching is case- and accent-insensitive: every word of the search term
// must start a word of the user's ID or display name.
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
	terms := foldWords(*req.SearchTerm)
	users, err := a.directoryCandidates(r.Ctx(), r.Caller.UserID)
	if err != nil {
		return nil, err
	}
	var matches []*directoryUser
	for _, u := range users {
		if matchesAll(terms, u.words) {
			matches = append(matches, u)
		}
	}
	sort.Slice(matches, func(i, j int) bool {
		ki, kj := sortName(matches[i]), sortName(matches[j])
		if ki != kj {
			return ki < kj
		}
		return matches[i].UserID < matches[j].UserID
	})
	limited := int64(len(matches)) > limit
	if limited {
		matches = matches[:limit]
	}
	if matches == nil {
		matches = []*directoryUser{}
	}
	return map[string]any{"results": matches, "limited": limited}, nil
}

func sortName(u *directoryUser) string {
	if u.DisplayName != "" {
		return strings.Join(foldWords(u.DisplayName), " ")
	}
	return strings.Join(foldWords(string(u.UserID)), " ")
}

// directoryCandidates gathers the users the searcher may find.
func (a *DiscoveryAPI) directoryCandidates(ctx context.Context, searcher id.UserID) (map[id.UserID]*directoryUser, error) {
	roomSet := map[id.RoomID]bool{}
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
		roomSet[rid] = true
	}
	out := map[id.UserID]*directoryUser{}
	for rid := range roomSet {
		members, err := a.Rooms.CurrentState(ctx, rid, "m.room.member")
		if err != nil {
			return nil, err
		}
		for _, ev := range members {
			if ev.StateKey == nil || ev.Membership() != "join" {
				continue
			}
			u := id.UserID(*ev.StateKey)
			if _, ok := out[u]; ok {
				continue
			}
			var c struct {
				DisplayName string `json:"displayname"`
				AvatarURL   string `json:"avatar_url"`
			}
			_ = json.Unmarshal(ev.Content, &c)
			du := &directoryUser{UserID: u, DisplayName: c.DisplayName, AvatarURL: c.AvatarURL}
			du.words = append(foldWords(string(u)), foldWords(c.DisplayName)...)
			out[u] = du
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

// foldWords lowercases s, strips its accents and splits it into words of
// letters and digits.
func foldWords(s string) []string {
	var b strings.Builder
	for _, r := range norm.NFD.String(s) {
		if unicode.Is(unicode.Mn, r) {
			continue
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return strings.FieldsFunc(b.String(), func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
}

// matchesAll reports whether every term begins one of words.
func matchesAll(terms, words []string) bool {
	for _, t := range terms {
		found := false
		for _, w := range words {
			if strings.HasPrefix(w, t) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
