package slidingsync

import (
	"bytes"
	"encoding/json"
	"sort"
	"strings"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
)

// Request limits (MSC4186: at most 100 lists and 100 subscriptions).
const (
	MaxLists         = 100
	MaxSubscriptions = 100
	MaxRanges        = 100
	MaxTimelineLimit = 100 // the server's cap on a room's timeline_limit
	MaxConnIDBytes   = 200
	MaxStateEntries  = 200
)

// Request is one sliding sync request, in the form Element X (ruma's v5
// types, Synapse's experimental form) sends and in the MSC's current form:
// ranges or range, required_state as [type, state_key] pairs or as
// {include, exclude, lazy_members}, is_invite or is_invited.
type Request struct {
	ConnID            string                 `json:"conn_id"`
	Pos               string                 `json:"pos"`
	Timeout           *int64                 `json:"timeout"`
	SetPresence       string                 `json:"set_presence"`
	Lists             map[string]*ListConfig `json:"lists"`
	RoomSubscriptions map[string]*RoomConfig `json:"room_subscriptions"`
	Extensions        Extensions             `json:"extensions"`
	TxnID             string                 `json:"txn_id"`
}

// RoomConfig is a room subscription (and the room part of a list).
type RoomConfig struct {
	TimelineLimit *int64        `json:"timeline_limit"`
	RequiredState RequiredState `json:"required_state"`
}

// ListConfig is one list.
type ListConfig struct {
	RoomConfig
	Ranges  [][2]int64 `json:"-"`
	Filters *Filters   `json:"filters"`
}

// UnmarshalJSON reads ranges ([[a,b],…]) or range ([a,b]).
func (l *ListConfig) UnmarshalJSON(b []byte) error {
	var raw struct {
		TimelineLimit *int64          `json:"timeline_limit"`
		RequiredState RequiredState   `json:"required_state"`
		Ranges        json.RawMessage `json:"ranges"`
		Range         json.RawMessage `json:"range"`
		Filters       *Filters        `json:"filters"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	l.TimelineLimit, l.RequiredState, l.Filters = raw.TimelineLimit, raw.RequiredState, raw.Filters
	if len(raw.Ranges) > 0 && string(raw.Ranges) != "null" {
		var rs [][]json.Number
		if err := json.Unmarshal(raw.Ranges, &rs); err != nil {
			return httpapi.InvalidParam("ranges must be a list of [start, end] pairs")
		}
		for _, r := range rs {
			p, err := pair(r)
			if err != nil {
				return err
			}
			l.Ranges = append(l.Ranges, p)
		}
	}
	if len(raw.Range) > 0 && string(raw.Range) != "null" {
		var r []json.Number
		if err := json.Unmarshal(raw.Range, &r); err != nil {
			return httpapi.InvalidParam("range must be a [start, end] pair")
		}
		p, err := pair(r)
		if err != nil {
			return err
		}
		l.Ranges = append(l.Ranges, p)
	}
	return nil
}

func pair(r []json.Number) ([2]int64, error) {
	if len(r) != 2 {
		return [2]int64{}, httpapi.InvalidParam("a range must have exactly two numbers")
	}
	var p [2]int64
	for i, n := range r {
		v, err := n.Int64()
		if err != nil || v < 0 {
			return p, httpapi.InvalidParam("range bounds must be non-negative integers")
		}
		p[i] = v
	}
	if p[0] > p[1] {
		return p, httpapi.InvalidParam("range start %d is after its end %d", p[0], p[1])
	}
	return p, nil
}

// Filters are a list's room filters.
type Filters struct {
	IsDM         *bool      `json:"is_dm"`
	IsInvite     *bool      `json:"is_invite"`
	IsInvited    *bool      `json:"is_invited"`
	IsEncrypted  *bool      `json:"is_encrypted"`
	RoomTypes    *[]*string `json:"room_types"`
	NotRoomTypes *[]*string `json:"not_room_types"`
	Spaces       []string   `json:"spaces"`
	Tags         []string   `json:"tags"`
	NotTags      []string   `json:"not_tags"`
}

// invite is is_invite or its newer name is_invited.
func (f *Filters) invite() *bool {
	if f.IsInvited != nil {
		return f.IsInvited
	}
	return f.IsInvite
}

// RequiredState is what state to send for a room. Element X sends
// [[type, state_key], …] with "*" wildcards, "$LAZY" (lazy members) and
// "$ME" (the user); the MSC's current form is {include, exclude,
// lazy_members} with omitted fields as wildcards. Both parse to pairs.
type RequiredState struct {
	Include [][2]string
	Exclude [][2]string
	Lazy    bool
}

// UnmarshalJSON reads either form.
func (rs *RequiredState) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	if len(b) > 0 && b[0] == '[' {
		var pairs [][]string
		if err := json.Unmarshal(b, &pairs); err != nil {
			return httpapi.InvalidParam("required_state must be a list of [type, state_key] pairs")
		}
		for _, p := range pairs {
			if len(p) != 2 {
				return httpapi.InvalidParam("required_state entries must be [type, state_key] pairs")
			}
			if p[0] == "m.room.member" && p[1] == "$LAZY" {
				rs.Lazy = true
				continue
			}
			rs.Include = append(rs.Include, [2]string{p[0], p[1]})
		}
		return rs.check()
	}
	var obj struct {
		Include []struct {
			Type     *string `json:"type"`
			StateKey *string `json:"state_key"`
		} `json:"include"`
		Exclude []struct {
			Type     *string `json:"type"`
			StateKey *string `json:"state_key"`
		} `json:"exclude"`
		LazyMembers bool `json:"lazy_members"`
	}
	if err := json.Unmarshal(b, &obj); err != nil {
		return httpapi.InvalidParam("required_state must be a list of pairs or {include, exclude, lazy_members}")
	}
	or := func(s *string) string {
		if s == nil {
			return Wildcard
		}
		return *s
	}
	for _, e := range obj.Include {
		rs.Include = append(rs.Include, [2]string{or(e.Type), or(e.StateKey)})
	}
	for _, e := range obj.Exclude {
		rs.Exclude = append(rs.Exclude, [2]string{or(e.Type), or(e.StateKey)})
	}
	rs.Lazy = obj.LazyMembers
	return rs.check()
}

func (rs *RequiredState) check() error {
	if len(rs.Include)+len(rs.Exclude) > MaxStateEntries {
		return httpapi.InvalidParam("required_state has more than %d entries", MaxStateEntries)
	}
	return nil
}

// ExtConfig is the common part of an extension's request.
type ExtConfig struct {
	Enabled *bool     `json:"enabled"`
	Lists   *[]string `json:"lists"`
	Rooms   *[]string `json:"rooms"`
}

// Extensions are the extension requests this server knows.
type Extensions struct {
	ToDevice *struct {
		ExtConfig
		Limit *int64 `json:"limit"`
		Since string `json:"since"`
	} `json:"to_device"`
	E2EE        *ExtConfig `json:"e2ee"`
	AccountData *ExtConfig `json:"account_data"`
	Receipts    *ExtConfig `json:"receipts"`
	Typing      *ExtConfig `json:"typing"`
}

func on(e *ExtConfig) bool { return e != nil && e.Enabled != nil && *e.Enabled }

// Validate checks the request's limits and values.
func (r *Request) Validate() error {
	if len(r.ConnID) > MaxConnIDBytes {
		return httpapi.InvalidParam("conn_id is over %d bytes", MaxConnIDBytes)
	}
	if len(r.Lists) > MaxLists {
		return httpapi.InvalidParam("more than %d lists", MaxLists)
	}
	if len(r.RoomSubscriptions) > MaxSubscriptions {
		return httpapi.InvalidParam("more than %d room subscriptions", MaxSubscriptions)
	}
	for name, l := range r.Lists {
		if l == nil {
			return httpapi.InvalidParam("list %q is null", name)
		}
		if name == "" || len(name) > 255 {
			return httpapi.InvalidParam("list names must be 1 to 255 bytes")
		}
		if len(l.Ranges) > MaxRanges {
			return httpapi.InvalidParam("list %q has more than %d ranges", name, MaxRanges)
		}
		if err := checkLimit(l.TimelineLimit); err != nil {
			return err
		}
	}
	for room, sub := range r.RoomSubscriptions {
		if sub == nil {
			return httpapi.InvalidParam("room subscription %q is null", room)
		}
		if !strings.HasPrefix(room, "!") || !strings.Contains(room, ":") && len(room) < 2 {
			return httpapi.InvalidParam("room subscription key %q is not a room id", room)
		}
		if err := checkLimit(sub.TimelineLimit); err != nil {
			return err
		}
	}
	if td := r.Extensions.ToDevice; td != nil && td.Limit != nil && *td.Limit < 0 {
		return httpapi.InvalidParam("to_device limit must not be negative")
	}
	switch r.SetPresence {
	case "", "online", "offline", "unavailable":
	default:
		return httpapi.InvalidParam("set_presence must be online, unavailable or offline")
	}
	return nil
}

func checkLimit(l *int64) error {
	if l != nil && *l < 0 {
		return httpapi.InvalidParam("timeline_limit must not be negative")
	}
	return nil
}

func limitOf(l *int64) int {
	if l == nil {
		return 0
	}
	return int(min(*l, MaxTimelineLimit))
}

// sortedNames returns a map's keys in order (for deterministic output).
func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
