package slidingsync

import (
	"sort"

	"maunium.net/go/mautrix/id"
)

// BumpTypes are the event types that move a room up the list (MSC4186
// bump_stamp: "proper" activity).
var BumpTypes = map[string]bool{
	"m.room.create":    true,
	"m.room.message":   true,
	"m.room.encrypted": true,
	"m.sticker":        true,
	"m.call.invite":    true,
	"m.poll.start":     true,
	"m.beacon_info":    true,
}

// Entry is one room of the user's room list, with what the filters and the
// ordering look at.
type Entry struct {
	ID         id.RoomID
	Membership string
	// Bump is the stream position of the room's latest bump event (or of
	// the user's membership event where they cannot see the timeline).
	Bump      int64
	DM        bool
	Encrypted bool
	// Type is the m.room.create type (nil for ordinary rooms).
	Type *string
	Tags map[string]bool
	// Spaces are the spaces (among those a filter names) listing the room.
	Spaces map[id.RoomID]bool
}

// Sort orders rooms by recency: latest bump first, ties by room id.
func Sort(rs []*Entry) {
	sort.SliceStable(rs, func(i, j int) bool {
		if rs[i].Bump != rs[j].Bump {
			return rs[i].Bump > rs[j].Bump
		}
		return rs[i].ID < rs[j].ID
	})
}

// Match reports whether a room passes a list's filters (nil: all rooms).
func Match(f *Filters, e *Entry) bool {
	if f == nil {
		return true
	}
	if f.IsDM != nil && *f.IsDM != e.DM {
		return false
	}
	if inv := f.invite(); inv != nil && *inv != (e.Membership == "invite") {
		return false
	}
	if f.IsEncrypted != nil && *f.IsEncrypted != e.Encrypted {
		return false
	}
	if f.NotRoomTypes != nil && typeIn(*f.NotRoomTypes, e.Type) {
		return false
	}
	if f.RoomTypes != nil && !typeIn(*f.RoomTypes, e.Type) {
		return false
	}
	if len(f.Spaces) > 0 {
		found := false
		for _, sp := range f.Spaces {
			if e.Spaces[id.RoomID(sp)] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	for _, t := range f.NotTags {
		if e.Tags[t] {
			return false
		}
	}
	if len(f.Tags) > 0 {
		found := false
		for _, t := range f.Tags {
			if e.Tags[t] {
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

func typeIn(types []*string, t *string) bool {
	for _, x := range types {
		if x == nil && t == nil || x != nil && t != nil && *x == *t {
			return true
		}
	}
	return false
}

// Window applies a list to sorted rooms: the rooms passing its filters
// (count) and those of them inside its ranges, in order. No ranges means
// every matching room.
func Window(l *ListConfig, sorted []*Entry) (count int, in []*Entry) {
	var matched []*Entry
	for _, e := range sorted {
		if Match(l.Filters, e) {
			matched = append(matched, e)
		}
	}
	if len(l.Ranges) == 0 {
		return len(matched), matched
	}
	seen := map[int]bool{}
	for _, r := range l.Ranges {
		for i := r[0]; i <= r[1] && i < int64(len(matched)); i++ {
			if !seen[int(i)] {
				seen[int(i)] = true
				in = append(in, matched[i])
			}
		}
	}
	sort.SliceStable(in, func(i, j int) bool { return indexOf(matched, in[i]) < indexOf(matched, in[j]) })
	return len(matched), in
}

func indexOf(rs []*Entry, e *Entry) int {
	for i, x := range rs {
		if x == e {
			return i
		}
	}
	return -1
}
