// Package filter implements the client-server API's event filters (spec
// "Filtering"): which events, senders and rooms a /sync, /messages or
// /context answer includes.
package filter

import (
	"encoding/json"
	"strings"

	"maunium.net/go/mautrix/id"
)

// EventFilter selects non-room events (presence, account data).
type EventFilter struct {
	Limit      int          `json:"limit,omitempty"`
	Types      *[]string    `json:"types,omitempty"`
	NotTypes   []string     `json:"not_types,omitempty"`
	Senders    *[]id.UserID `json:"senders,omitempty"`
	NotSenders []id.UserID  `json:"not_senders,omitempty"`
}

// RoomEventFilter selects room events.
type RoomEventFilter struct {
	EventFilter
	Rooms                     *[]id.RoomID `json:"rooms,omitempty"`
	NotRooms                  []id.RoomID  `json:"not_rooms,omitempty"`
	ContainsURL               *bool        `json:"contains_url,omitempty"`
	LazyLoadMembers           bool         `json:"lazy_load_members,omitempty"`
	IncludeRedundantMembers   bool         `json:"include_redundant_members,omitempty"`
	UnreadThreadNotifications bool         `json:"unread_thread_notifications,omitempty"`
}

// RoomFilter is the "room" part of a Filter.
type RoomFilter struct {
	Rooms        *[]id.RoomID    `json:"rooms,omitempty"`
	NotRooms     []id.RoomID     `json:"not_rooms,omitempty"`
	IncludeLeave bool            `json:"include_leave,omitempty"`
	Timeline     RoomEventFilter `json:"timeline,omitempty"`
	State        RoomEventFilter `json:"state,omitempty"`
	Ephemeral    RoomEventFilter `json:"ephemeral,omitempty"`
	AccountData  RoomEventFilter `json:"account_data,omitempty"`
}

// Filter is a whole filter as uploaded to /user/{userId}/filter.
type Filter struct {
	EventFields []string    `json:"event_fields,omitempty"`
	EventFormat string      `json:"event_format,omitempty"`
	Presence    EventFilter `json:"presence,omitempty"`
	AccountData EventFilter `json:"account_data,omitempty"`
	Room        RoomFilter  `json:"room,omitempty"`
}

// Event is what a filter looks at.
type Event struct {
	Type    string
	Sender  id.UserID
	RoomID  id.RoomID
	Content json.RawMessage
}

// typeMatches implements the spec's '*' wildcard on event types.
func typeMatches(pattern, typ string) bool {
	if !strings.Contains(pattern, "*") {
		return pattern == typ
	}
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(typ, parts[0]) {
		return false
	}
	rest := typ[len(parts[0]):]
	for i, p := range parts[1:] {
		if i == len(parts)-2 {
			return strings.HasSuffix(rest, p)
		}
		k := strings.Index(rest, p)
		if k < 0 {
			return false
		}
		rest = rest[k+len(p):]
	}
	return true
}

func anyType(patterns []string, typ string) bool {
	for _, p := range patterns {
		if typeMatches(p, typ) {
			return true
		}
	}
	return false
}

// Match reports whether the filter keeps an event (nil keeps everything).
func (f *EventFilter) Match(typ string, sender id.UserID) bool {
	if f == nil {
		return true
	}
	if anyType(f.NotTypes, typ) {
		return false
	}
	if f.Types != nil && !anyType(*f.Types, typ) {
		return false
	}
	for _, s := range f.NotSenders {
		if s == sender {
			return false
		}
	}
	if f.Senders != nil {
		ok := false
		for _, s := range *f.Senders {
			if s == sender {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// MatchRoom reports whether a room passes rooms/not_rooms.
func MatchRoom(rooms *[]id.RoomID, notRooms []id.RoomID, r id.RoomID) bool {
	for _, n := range notRooms {
		if n == r {
			return false
		}
	}
	if rooms != nil {
		for _, x := range *rooms {
			if x == r {
				return true
			}
		}
		return false
	}
	return true
}

// Match reports whether the room event filter keeps ev (nil keeps all).
func (f *RoomEventFilter) Match(ev Event) bool {
	if f == nil {
		return true
	}
	if !f.EventFilter.Match(ev.Type, ev.Sender) || !MatchRoom(f.Rooms, f.NotRooms, ev.RoomID) {
		return false
	}
	if f.ContainsURL != nil {
		var c struct {
			URL *string `json:"url"`
		}
		_ = json.Unmarshal(ev.Content, &c)
		if (c.URL != nil) != *f.ContainsURL {
			return false
		}
	}
	return true
}
