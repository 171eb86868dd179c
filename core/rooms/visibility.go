package rooms

import (
	"context"
	"encoding/json"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// redactContent applies the room version's redaction algorithm to content.
func redactContent(ev *Event) json.RawMessage {
	return json.RawMessage(pdu.RedactContent(ev.Type, []byte(ev.Content), ev.RoomVersion))
}

// visibility of history at one state group, for one user.
type visState struct {
	history    string
	membership string
}

// CanSee filters events a user may see under the room's history visibility
// (spec "History visibility"): joined members see everything from the point
// history became visible to them; "world_readable" and "shared" open the past
// to current members; "invited" to invitees; "joined" only while joined.
func (s *Service) CanSee(ctx context.Context, u id.UserID, evs []*Event) ([]*Event, error) {
	if len(evs) == 0 {
		return evs, nil
	}
	r := evs[0].RoomID
	current, err := s.Membership(ctx, r, u)
	if err != nil {
		return nil, err
	}
	cache := map[string]visState{}
	out := evs[:0:0]
	for _, ev := range evs {
		if ev.Rejected || ev.SoftFailed {
			continue // events from other servers that failed the auth rules (remote.go)
		}
		g := ev.StateBefore
		vs, ok := cache[g]
		if !ok {
			st, err := s.groupState(ctx, g)
			if err != nil {
				return nil, err
			}
			vs = visState{history: "shared"}
			ids := []id.EventID{}
			hk, mk := joinKey("m.room.history_visibility", ""), joinKey("m.room.member", string(u))
			if e := st[hk]; e != "" {
				ids = append(ids, id.EventID(e))
			}
			if e := st[mk]; e != "" {
				ids = append(ids, id.EventID(e))
			}
			got, err := s.EventsByID(ctx, ids)
			if err != nil {
				return nil, err
			}
			for _, g := range got {
				switch g.Type {
				case "m.room.history_visibility":
					var c struct {
						V string `json:"history_visibility"`
					}
					_ = json.Unmarshal(g.Content, &c)
					if c.V != "" {
						vs.history = c.V
					}
				case "m.room.member":
					vs.membership = g.Membership()
				}
			}
			cache[g] = vs
		}
		// The user's own membership events are always visible to them.
		if ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == string(u) {
			out = append(out, ev)
			continue
		}
		switch {
		case vs.history == "world_readable":
		case vs.membership == "join":
		case vs.history == "shared" && current == "join":
		case vs.history == "invited" && (vs.membership == "invite" || current == "join" && vs.membership == "invite"):
		default:
			continue
		}
		out = append(out, ev)
	}
	return out, nil
}
