// Package rooms is the room engine: it builds, authorizes, signs and
// persists events, keeps each room's current state, its state history
// (state groups), its timeline and the global event stream, and reads them
// back for clients.
//
// Persistence is one table transaction per event. The transaction replaces
// the room head conditionally (IfVersion), so concurrent writers on any
// number of machines can neither fork nor misorder a room's local event
// graph; it also claims the event's slot in the global stream (core/stream),
// so /sync readers never skip or repeat an event.
package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/signing"
	"github.com/cirrus-matrix/cirrus/core/stream"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// MaxEventBytes is the spec's limit on an event's canonical JSON.
const MaxEventBytes = 65536

// EventsStream names the global event stream (what incremental /sync and
// the fan-out worker read).
const EventsStream = "events"

// Service is the room engine.
type Service struct {
	T          table.Table
	ServerName string
	Key        *signing.Key
	Events     *stream.Stream
	Log        *slog.Logger
	Now        func() time.Time
	// OnPersist, if set, is called after each event is committed (the
	// fan-out hook: wakes /sync waiters, queues federation).
	OnPersist func(ev *Event)
	// Profile, if set, gives a local user's displayname and avatar for
	// member events.
	Profile func(ctx context.Context, u id.UserID) (displayname, avatarURL string)
	// AliasMissing, if set, is asked about a local alias that does not
	// exist (application services create rooms on demand); true means it
	// may exist now and the lookup is tried once more.
	AliasMissing func(ctx context.Context, a id.RoomAlias) bool
	// Resolve is state resolution (core/stateres.Resolve), needed once a
	// room has several forward extremities (remote.go).
	Resolve ResolveFunc
	// Remote, if set, reaches other servers for joins, invites and leaves
	// this server cannot do alone (core/federation).
	Remote Remote

	groups sync.Map // state group id → *stateGroup (immutable, so cached forever)
	// resolved caches each group's whole state (group id → map, shared,
	// never modified).
	resolved sync.Map
}

// New builds the engine.
func New(t table.Table, serverName string, key *signing.Key, log *slog.Logger, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &Service{T: t, ServerName: serverName, Key: key, Log: log, Now: now,
		Events: &stream.Stream{T: t, Name: EventsStream, Now: now}}
}

// Key layout (ARCHITECTURE.md, "Key schema").
func roomPK(r id.RoomID) string       { return "room#" + string(r) }
func headKey(r id.RoomID) table.Key   { return table.Key{PK: roomPK(r), SK: "head"} }
func eventKey(e id.EventID) table.Key { return table.Key{PK: "event#" + string(e), SK: "event"} }
func seqSK(seq int64) string          { return fmt.Sprintf("seq#%016d", seq) }
func stateSK(typ, skey string) string { return "state#" + typ + "\x1f" + skey }
func stateKey(r id.RoomID, typ, skey string) table.Key {
	return table.Key{PK: roomPK(r), SK: stateSK(typ, skey)}
}
func membershipKey(u id.UserID, r id.RoomID) table.Key {
	return table.Key{PK: "user#" + string(u), SK: "mship#" + string(r)}
}

// txnKey scopes a client transaction id like the request path does: to the
// device and the room.
func txnKey(u id.UserID, device id.DeviceID, r id.RoomID, txn string) table.Key {
	return table.Key{PK: "txn#" + string(u) + "#" + string(device), SK: string(r) + "\x1f" + txn}
}
func relPK(parent id.EventID) string { return "rel#" + string(parent) }

// head is the room head item: the room's version, its forward extremities,
// its current state group, and (in the item's Version) its sequence number.
type head struct {
	RoomVersion id.RoomVersion `json:"room_version"`
	Extremities []id.EventID   `json:"extremities"`
	Depth       int64          `json:"depth"`
	StateGroup  string         `json:"state_group"`
	LastPos     int64          `json:"last_pos"`
	seq         int64
}

// Event is a persisted event as the engine keeps it.
type Event struct {
	RoomID      id.RoomID       `json:"room_id"`
	RoomVersion id.RoomVersion  `json:"room_version"`
	EventID     id.EventID      `json:"event_id"`
	PDU         json.RawMessage `json:"pdu"`
	Seq         int64           `json:"seq"`
	Pos         int64           `json:"pos"`
	// StateBefore is the state group in force before this event.
	StateBefore string `json:"sg_before"`
	// StateAfter is set for state events: the group this event starts.
	StateAfter string `json:"sg_after,omitempty"`
	// Replaces is the state event this one replaced (for prev_content).
	Replaces   *PrevState `json:"replaces,omitempty"`
	TxnID      string     `json:"txn_id,omitempty"`
	TxnDevice  string     `json:"txn_device,omitempty"`
	RedactedBy id.EventID `json:"redacted_by,omitempty"`
	// Outlier events (auth chains, room state fetched while joining, invites
	// to rooms this server is not in) have no timeline position and no
	// state of their own; Rejected and SoftFailed events from other servers
	// are kept out of the timeline, the current state and the extremities
	// (remote.go).
	Outlier    bool `json:"outlier,omitempty"`
	Rejected   bool `json:"rejected,omitempty"`
	SoftFailed bool `json:"soft_failed,omitempty"`

	// Parsed fields of the PDU (not stored separately).
	Type           string          `json:"-"`
	StateKey       *string         `json:"-"`
	Sender         id.UserID       `json:"-"`
	Content        json.RawMessage `json:"-"`
	OriginServerTS int64           `json:"-"`
	Redacts        id.EventID      `json:"-"`
	version        int64
	relCount       int64 // children recorded (the item's Num)
}

// PrevState describes the state event an event replaced.
type PrevState struct {
	EventID id.EventID      `json:"event_id"`
	Sender  id.UserID       `json:"sender"`
	Content json.RawMessage `json:"content"`
}

// pduFields is the subset of a PDU the engine reads back.
type pduFields struct {
	Type           string          `json:"type"`
	StateKey       *string         `json:"state_key"`
	Sender         id.UserID       `json:"sender"`
	Content        json.RawMessage `json:"content"`
	OriginServerTS int64           `json:"origin_server_ts"`
	Redacts        id.EventID      `json:"redacts"`
}

func (e *Event) parse() error {
	var f pduFields
	if err := json.Unmarshal(e.PDU, &f); err != nil {
		return fmt.Errorf("event %s: %w", e.EventID, err)
	}
	e.Type, e.StateKey, e.Sender, e.Content, e.OriginServerTS, e.Redacts = f.Type, f.StateKey, f.Sender, f.Content, f.OriginServerTS, f.Redacts
	if e.Redacts == "" && e.Type == "m.room.redaction" {
		var c struct {
			Redacts id.EventID `json:"redacts"`
		}
		_ = json.Unmarshal(f.Content, &c)
		e.Redacts = c.Redacts
	}
	return nil
}

// IsState reports whether the event is a state event.
func (e *Event) IsState() bool { return e.StateKey != nil }

// Membership returns content.membership of a member event.
func (e *Event) Membership() string {
	if e.Type != "m.room.member" {
		return ""
	}
	var c struct {
		Membership string `json:"membership"`
	}
	_ = json.Unmarshal(e.Content, &c)
	return c.Membership
}

func decodeEvent(it table.Item) (*Event, error) {
	var e Event
	if err := json.Unmarshal(it.Data, &e); err != nil {
		return nil, err
	}
	e.version, e.relCount = it.Version, it.Num
	return &e, e.parse()
}

// stateEntry is a current-state item: the event and its PDU (so building a
// new event's auth events needs no second read).
type stateEntry struct {
	EventID    id.EventID      `json:"event_id"`
	PDU        json.RawMessage `json:"pdu"`
	Membership string          `json:"membership,omitempty"`
}

// MembershipRecord is a local user's membership in one room (the
// per-user index behind /joined_rooms and sync).
type MembershipRecord struct {
	RoomID     id.RoomID  `json:"room_id"`
	Membership string     `json:"membership"`
	EventID    id.EventID `json:"event_id"`
	Pos        int64      `json:"pos"`
	Forgotten  bool       `json:"forgotten,omitempty"`
}

// ErrNoRoom is returned for rooms this server does not know.
var ErrNoRoom = httpapi.NotFound("unknown room")

// isLocal reports whether a user belongs to this server.
func (s *Service) isLocal(u id.UserID) bool {
	_, server, err := u.Parse()
	return err == nil && server == s.ServerName
}

func (s *Service) getHead(ctxT context.Context, r id.RoomID) (*head, error) {
	it, err := s.T.Get(ctxT, headKey(r))
	if errors.Is(err, table.ErrNotFound) {
		return nil, ErrNoRoom
	}
	if err != nil {
		return nil, err
	}
	var h head
	if err := json.Unmarshal(it.Data, &h); err != nil {
		return nil, err
	}
	h.seq = it.Version
	return &h, nil
}

// RoomVersion returns a room's version (ErrNoRoom if unknown).
func (s *Service) RoomVersion(ctx context.Context, r id.RoomID) (id.RoomVersion, error) {
	h, err := s.getHead(ctx, r)
	if err != nil {
		return "", err
	}
	return h.RoomVersion, nil
}

// splitStateSK parses a state item's sort key.
func splitStateSK(sk string) (typ, skey string) {
	rest := strings.TrimPrefix(sk, "state#")
	typ, skey, _ = strings.Cut(rest, "\x1f")
	return typ, skey
}
