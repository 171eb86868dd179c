package clientsync

import (
	"encoding/json"

	"maunium.net/go/mautrix/id"
)

// Response is the /sync answer.
type Response struct {
	NextBatch   string     `json:"next_batch"`
	AccountData *EventList `json:"account_data,omitempty"`
	Presence    *EventList `json:"presence,omitempty"`
	ToDevice    *EventList `json:"to_device,omitempty"`
	Rooms       *Rooms     `json:"rooms,omitempty"`
	// The E2EE parts, present only with a DeviceListSource.
	DeviceLists              *DeviceLists   `json:"device_lists,omitempty"`
	OneTimeKeysCount         map[string]int `json:"device_one_time_keys_count,omitempty"`
	UnusedFallbackKeyTypes   []string       `json:"device_unused_fallback_key_types,omitempty"`
	unusedFallbackKeyTypesOK bool
}

// MarshalJSON keeps device_unused_fallback_key_types when it is an empty
// list (it means "no unused fallback key", which clients act on).
func (r *Response) MarshalJSON() ([]byte, error) {
	type plain Response
	b, err := json.Marshal((*plain)(r))
	if err != nil || !r.unusedFallbackKeyTypesOK || len(r.UnusedFallbackKeyTypes) > 0 {
		return b, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	m["device_unused_fallback_key_types"] = json.RawMessage("[]")
	return json.Marshal(m)
}

// EventList is {"events": [...]}.
type EventList struct {
	Events []json.RawMessage `json:"events"`
}

func newList() EventList { return EventList{Events: []json.RawMessage{}} }

// DeviceLists is the device_lists section.
type DeviceLists struct {
	Changed []id.UserID `json:"changed"`
	Left    []id.UserID `json:"left"`
}

// Rooms is the rooms section.
type Rooms struct {
	Join   map[id.RoomID]*JoinedRoom  `json:"join"`
	Invite map[id.RoomID]*InvitedRoom `json:"invite"`
	Knock  map[id.RoomID]*KnockedRoom `json:"knock"`
	Leave  map[id.RoomID]*LeftRoom    `json:"leave"`
}

// Timeline is a room's timeline section.
type Timeline struct {
	Events    []json.RawMessage `json:"events"`
	Limited   bool              `json:"limited"`
	PrevBatch string            `json:"prev_batch,omitempty"`
}

// Unread is unread_notifications.
type Unread struct {
	HighlightCount    int `json:"highlight_count"`
	NotificationCount int `json:"notification_count"`
}

// Summary is a joined room's summary.
type Summary struct {
	Heroes       []id.UserID `json:"m.heroes,omitempty"`
	JoinedCount  *int        `json:"m.joined_member_count,omitempty"`
	InvitedCount *int        `json:"m.invited_member_count,omitempty"`
}

// JoinedRoom is one room of rooms.join.
type JoinedRoom struct {
	Summary *Summary  `json:"summary,omitempty"`
	State   EventList `json:"state"`
	// StateAfter replaces State when the request set use_state_after.
	StateAfter          *EventList `json:"state_after,omitempty"`
	Timeline            Timeline   `json:"timeline"`
	Ephemeral           EventList  `json:"ephemeral"`
	AccountData         EventList  `json:"account_data"`
	UnreadNotifications *Unread    `json:"unread_notifications,omitempty"`
	// UnreadThreadNotifications are the per-thread counts (only with the
	// filter's unread_thread_notifications; threads without any left out).
	UnreadThreadNotifications map[id.EventID]*Unread `json:"unread_thread_notifications,omitempty"`
}

// InvitedRoom is one room of rooms.invite.
type InvitedRoom struct {
	InviteState EventList `json:"invite_state"`
}

// KnockedRoom is one room of rooms.knock.
type KnockedRoom struct {
	KnockState EventList `json:"knock_state"`
}

// LeftRoom is one room of rooms.leave.
type LeftRoom struct {
	State EventList `json:"state"`
	// StateAfter replaces State when the request set use_state_after.
	StateAfter  *EventList `json:"state_after,omitempty"`
	Timeline    Timeline   `json:"timeline"`
	AccountData EventList  `json:"account_data"`
}

// empty reports whether the response carries nothing new.
func (r *Response) empty() bool {
	if r.AccountData != nil && len(r.AccountData.Events) > 0 || r.ToDevice != nil && len(r.ToDevice.Events) > 0 ||
		r.Presence != nil && len(r.Presence.Events) > 0 {
		return false
	}
	if r.DeviceLists != nil && (len(r.DeviceLists.Changed) > 0 || len(r.DeviceLists.Left) > 0) {
		return false
	}
	rs := r.Rooms
	return rs == nil || len(rs.Join) == 0 && len(rs.Invite) == 0 && len(rs.Knock) == 0 && len(rs.Leave) == 0
}

func newRooms() *Rooms {
	return &Rooms{Join: map[id.RoomID]*JoinedRoom{}, Invite: map[id.RoomID]*InvitedRoom{},
		Knock: map[id.RoomID]*KnockedRoom{}, Leave: map[id.RoomID]*LeftRoom{}}
}

// MarshalJSON leaves out state when state_after is given (the spec says
// a server MUST omit one of them).
func (j *JoinedRoom) MarshalJSON() ([]byte, error) {
	type plain JoinedRoom
	return withoutStateIfAfter((*plain)(j), j.StateAfter != nil)
}

// MarshalJSON leaves out state when state_after is given.
func (l *LeftRoom) MarshalJSON() ([]byte, error) {
	type plain LeftRoom
	return withoutStateIfAfter((*plain)(l), l.StateAfter != nil)
}

func withoutStateIfAfter(v any, after bool) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil || !after {
		return b, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	delete(m, "state")
	return json.Marshal(m)
}
