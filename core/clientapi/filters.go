package clientapi

import (
	"github.com/cirrus-matrix/cirrus/core/filter"
	"github.com/cirrus-matrix/cirrus/core/rooms"
)

// RoomEventFilter adapts filter.RoomEventFilter to engine events.
type RoomEventFilter struct{ filter.RoomEventFilter }

// Match reports whether the filter keeps ev (a nil filter keeps all).
func (f *RoomEventFilter) Match(ev *rooms.Event) bool {
	if f == nil {
		return true
	}
	return f.RoomEventFilter.Match(filter.Event{Type: ev.Type, Sender: ev.Sender, RoomID: ev.RoomID, Content: ev.Content})
}
