package rooms

import (
	"context"
	"encoding/json"
	"math"
	"strconv"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// Power is the effective power-level table of a room.
type Power struct {
	Users         map[id.UserID]int
	UsersDefault  int
	Events        map[string]int
	EventsDefault int
	StateDefault  int
	Invite        int
	Kick          int
	Ban           int
	Redact        int
	// Creators have unlimited power (room v12).
	Creators []id.UserID
}

// flexInt accepts numbers and (older room versions) numeric strings.
type flexInt struct{ v *int }

func (f *flexInt) UnmarshalJSON(b []byte) error {
	var n float64
	if err := json.Unmarshal(b, &n); err == nil {
		i := int(n)
		f.v = &i
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		if i, err := strconv.Atoi(s); err == nil {
			f.v = &i
		}
	}
	return nil
}

func (f flexInt) or(def int) int {
	if f.v == nil {
		return def
	}
	return *f.v
}

// PowerLevels reads the room's current power levels.
func (s *Service) PowerLevels(ctx context.Context, r id.RoomID) (*Power, error) {
	st, err := s.currentStateFor(ctx, r, pdu.AuthEventSelection{{Type: "m.room.power_levels"}, {Type: "m.room.create"}})
	if err != nil {
		return nil, err
	}
	var plc, cc json.RawMessage
	if e := st[pdu.StateKey{Type: "m.room.power_levels"}]; e != nil {
		plc = pduContent(e.PDU)
	}
	var creator id.UserID
	if e := st[pdu.StateKey{Type: "m.room.create"}]; e != nil {
		cc = pduContent(e.PDU)
		var f pduFields
		_ = json.Unmarshal(e.PDU, &f)
		creator = f.Sender
	}
	rv, err := s.RoomVersion(ctx, r)
	if err != nil {
		return nil, err
	}
	return parsePower(rv, plc, cc, creator), nil
}

func pduContent(raw json.RawMessage) json.RawMessage {
	var f struct {
		Content json.RawMessage `json:"content"`
	}
	_ = json.Unmarshal(raw, &f)
	return f.Content
}

func parsePower(rv id.RoomVersion, plContent, createContent json.RawMessage, creator id.UserID) *Power {
	var c struct {
		Users         map[id.UserID]flexInt `json:"users"`
		UsersDefault  flexInt               `json:"users_default"`
		Events        map[string]flexInt    `json:"events"`
		EventsDefault flexInt               `json:"events_default"`
		StateDefault  flexInt               `json:"state_default"`
		Invite        flexInt               `json:"invite"`
		Kick          flexInt               `json:"kick"`
		Ban           flexInt               `json:"ban"`
		Redact        flexInt               `json:"redact"`
	}
	p := &Power{Users: map[id.UserID]int{}, Events: map[string]int{}}
	if plContent == nil {
		// No power levels event: the creator has 100, state needs 0 (spec).
		p.StateDefault, p.Invite, p.Kick, p.Ban, p.Redact = 0, 0, 50, 50, 50
		if creator != "" {
			p.Users[creator] = 100
		}
	} else {
		_ = json.Unmarshal(plContent, &c)
		for u, v := range c.Users {
			p.Users[u] = v.or(0)
		}
		for t, v := range c.Events {
			p.Events[t] = v.or(0)
		}
		p.UsersDefault, p.EventsDefault, p.StateDefault = c.UsersDefault.or(0), c.EventsDefault.or(0), c.StateDefault.or(50)
		p.Invite, p.Kick, p.Ban, p.Redact = c.Invite.or(0), c.Kick.or(50), c.Ban.or(50), c.Redact.or(50)
	}
	if rv.PrivilegedRoomCreators() {
		p.Creators = append(p.Creators, creator)
		var cc struct {
			Additional []id.UserID `json:"additional_creators"`
		}
		_ = json.Unmarshal(createContent, &cc)
		p.Creators = append(p.Creators, cc.Additional...)
	}
	return p
}

// UserLevel is u's power level.
func (p *Power) UserLevel(u id.UserID) int {
	for _, c := range p.Creators {
		if c == u {
			return math.MaxInt
		}
	}
	if v, ok := p.Users[u]; ok {
		return v
	}
	return p.UsersDefault
}

// EventLevel is the level needed to send an event of this type.
func (p *Power) EventLevel(typ string, state bool) int {
	if v, ok := p.Events[typ]; ok {
		return v
	}
	if state {
		return p.StateDefault
	}
	return p.EventsDefault
}
