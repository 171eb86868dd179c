package filter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"maunium.net/go/mautrix/id"
)

// Limits on a filter's size and its timeline.
const (
	DefaultTimelineLimit = 10
	MaxTimelineLimit     = 1000
	maxListLen           = 1000
)

// Error says what is wrong with a filter. BadJSON is set when the JSON has
// the wrong shape (a field of the wrong type); otherwise a value is invalid.
type Error struct {
	BadJSON bool
	Msg     string
}

func (e *Error) Error() string { return e.Msg }

func invalid(format string, args ...any) error {
	return &Error{Msg: fmt.Sprintf(format, args...)}
}

// Parse decodes and validates a filter (a JSON object).
func Parse(b []byte) (*Filter, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' || !json.Valid(b) {
		return nil, &Error{BadJSON: true, Msg: "a filter must be a JSON object"}
	}
	var f Filter
	if err := json.Unmarshal(b, &f); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, &Error{BadJSON: true, Msg: fmt.Sprintf("filter field %q has the wrong type", te.Field)}
		}
		return nil, &Error{BadJSON: true, Msg: "filter has the wrong shape: " + err.Error()}
	}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return &f, nil
}

// ParseRoomEventFilter decodes and validates a RoomEventFilter (the
// filter parameter of /messages and /context).
func ParseRoomEventFilter(b []byte) (*RoomEventFilter, error) {
	var f RoomEventFilter
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, &Error{BadJSON: true, Msg: "filter is not a valid RoomEventFilter"}
	}
	if err := f.validate("filter"); err != nil {
		return nil, err
	}
	return &f, nil
}

// Validate checks the values a filter holds.
func (f *Filter) Validate() error {
	switch f.EventFormat {
	case "", "client", "federation":
	default:
		return invalid("event_format must be client or federation")
	}
	if len(f.EventFields) > maxListLen {
		return invalid("too many event_fields")
	}
	for _, p := range f.EventFields {
		if _, ok := splitPath(p); !ok {
			return invalid("event_fields entry %q is not a field path", p)
		}
	}
	if err := f.Presence.validate("presence"); err != nil {
		return err
	}
	if err := f.AccountData.validate("account_data"); err != nil {
		return err
	}
	r := &f.Room
	if err := checkRooms("room", r.Rooms, r.NotRooms); err != nil {
		return err
	}
	for name, ef := range map[string]*RoomEventFilter{"room.timeline": &r.Timeline, "room.state": &r.State,
		"room.ephemeral": &r.Ephemeral, "room.account_data": &r.AccountData} {
		if err := ef.validate(name); err != nil {
			return err
		}
	}
	return nil
}

func (f *EventFilter) validate(where string) error {
	if f.Limit < 0 {
		return invalid("%s.limit must be greater than 0", where)
	}
	if f.Types != nil && len(*f.Types) > maxListLen || len(f.NotTypes) > maxListLen {
		return invalid("%s: too many types", where)
	}
	senders := f.NotSenders
	if f.Senders != nil {
		senders = append(append([]id.UserID{}, senders...), *f.Senders...)
	}
	if len(senders) > 2*maxListLen {
		return invalid("%s: too many senders", where)
	}
	for _, u := range senders {
		if !strings.HasPrefix(string(u), "@") || !strings.Contains(string(u), ":") {
			return invalid("%s: %q is not a user ID", where, u)
		}
	}
	return nil
}

func (f *RoomEventFilter) validate(where string) error {
	if err := f.EventFilter.validate(where); err != nil {
		return err
	}
	return checkRooms(where, f.Rooms, f.NotRooms)
}

func checkRooms(where string, rooms *[]id.RoomID, notRooms []id.RoomID) error {
	all := notRooms
	if rooms != nil {
		all = append(append([]id.RoomID{}, all...), *rooms...)
	}
	if len(all) > 2*maxListLen {
		return invalid("%s: too many rooms", where)
	}
	for _, r := range all {
		if !strings.HasPrefix(string(r), "!") {
			return invalid("%s: %q is not a room ID", where, r)
		}
	}
	return nil
}

// TimelineLimit is the number of timeline events per room a sync returns.
func (f *Filter) TimelineLimit() int {
	if f == nil || f.Room.Timeline.Limit <= 0 {
		return DefaultTimelineLimit
	}
	return min(f.Room.Timeline.Limit, MaxTimelineLimit)
}

// Federation reports whether events are wanted in the federation format.
func (f *Filter) Federation() bool { return f != nil && f.EventFormat == "federation" }

// IncludesRoom applies room.rooms and room.not_rooms.
func (f *Filter) IncludesRoom(r id.RoomID) bool {
	return f == nil || MatchRoom(f.Room.Rooms, f.Room.NotRooms, r)
}

// MatchType applies types and not_types only (for events without a
// meaningful sender, such as account data).
func (f *EventFilter) MatchType(typ string) bool {
	if f == nil {
		return true
	}
	if anyType(f.NotTypes, typ) {
		return false
	}
	return f.Types == nil || anyType(*f.Types, typ)
}
