package rooms

import (
	"context"
	"encoding/json"
	"sort"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// Reads /sync needs that the engine's key layout answers cheaply.

// SyncMember is one m.room.member entry of a room's current state.
type SyncMember struct {
	UserID     id.UserID
	Membership string
	// Depth orders members by when their membership last changed.
	Depth int64
}

// SyncMembers lists the room's current member entries, oldest change first,
// from the current-state items alone (no event reads).
func (s *Service) SyncMembers(ctx context.Context, r id.RoomID) ([]SyncMember, error) {
	q := table.Query{PK: roomPK(r), Prefix: stateSK("m.room.member", "")}
	var out []SyncMember
	for {
		page, err := s.T.Query(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, it := range page.Items {
			var se stateEntry
			if err := json.Unmarshal(it.Data, &se); err != nil {
				return nil, err
			}
			var p struct {
				Depth int64 `json:"depth"`
			}
			_ = json.Unmarshal(se.PDU, &p)
			_, skey := splitStateSK(it.SK)
			out = append(out, SyncMember{UserID: id.UserID(skey), Membership: se.Membership, Depth: p.Depth})
		}
		if page.Next == "" {
			break
		}
		q.Cursor = page.Next
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Depth < out[j].Depth })
	return out, nil
}

// SeqAtPos returns the sequence of the room's newest event whose global
// stream position is at most pos (0 if there is none).
func (s *Service) SeqAtPos(ctx context.Context, r id.RoomID, pos int64) (int64, error) {
	q := table.Query{PK: roomPK(r), From: "seq#", To: "seq#9999999999999999", Reverse: true, Limit: 50}
	for {
		page, err := s.T.Query(ctx, q)
		if err != nil {
			return 0, err
		}
		for _, it := range page.Items {
			if it.Num <= pos {
				var seq int64
				for _, c := range it.SK[len("seq#"):] {
					seq = seq*10 + int64(c-'0')
				}
				return seq, nil
			}
		}
		if page.Next == "" {
			return 0, nil
		}
		q.Cursor = page.Next
	}
}
