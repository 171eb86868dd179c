package appservice

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/ephemeral"
	"github.com/cirrus-matrix/cirrus/core/queue"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Ephemeral data (spec "Pushing ephemeral data", v1.13): services whose
// registration sets receive_ephemeral get typing notices, receipts and
// presence in the `ephemeral` list of their transactions. Each datum is an
// outbox item beside the events,
//
//	as#<id> / eph#<%016d µs>#<random>   d = the event as pushed, ttl
//
// and a transaction carries up to MaxEphemeralPerTxn of them, read again
// at each attempt, so a typing notice that expired while the service was
// down drops out instead of arriving late (like typing EDUs to servers).
// They are queued when the change happens, best effort: a change that
// fails to queue is lost, as an unsent typing EDU would be.

// MaxEphemeralPerTxn bounds the ephemeral data of one transaction.
const MaxEphemeralPerTxn = 100

const ephPrefix = "eph#"

// How long queued ephemeral data stays worth sending.
const (
	typingStaleAfter    = time.Minute
	ephemeralStaleAfter = 24 * time.Hour
)

// TypingChanged queues a room's typing list, as it is now, for the
// services interested in the room (call it after the list changed).
func (s *Service) TypingChanged(ctx context.Context, room id.RoomID) error {
	if s.TypingUsers == nil || !s.anyEphemeral() {
		return nil
	}
	regs, err := s.interestedIn(ctx, room, nil, true)
	if err != nil || len(regs) == 0 {
		return err
	}
	users, err := s.TypingUsers(ctx, room)
	if err != nil {
		return err
	}
	if users == nil {
		users = []id.UserID{}
	}
	data, _ := json.Marshal(map[string]any{"type": "m.typing", "room_id": room, "content": map[string]any{"user_ids": users}})
	return s.enqueueEphemeral(ctx, regs, data, typingStaleAfter)
}

// ReceiptChanged queues a receipt for the services interested in its
// room; a private receipt only for those whose namespaces hold its user.
func (s *Service) ReceiptChanged(ctx context.Context, rc ephemeral.Receipt) error {
	if !s.anyEphemeral() {
		return nil
	}
	regs, err := s.interestedIn(ctx, rc.RoomID, []id.UserID{rc.UserID}, true)
	if err != nil {
		return err
	}
	if rc.Private() {
		own := regs[:0]
		for _, reg := range regs {
			if reg.OwnsUser(rc.UserID) {
				own = append(own, reg)
			}
		}
		regs = own
	}
	if len(regs) == 0 {
		return nil
	}
	data, _ := json.Marshal(map[string]any{"type": "m.receipt", "room_id": rc.RoomID,
		"content": ephemeral.ReceiptContent([]ephemeral.Receipt{rc})})
	return s.enqueueEphemeral(ctx, regs, data, ephemeralStaleAfter)
}

// PresenceChanged queues u's presence for the services it applies to:
// those whose namespaces hold u, and those interested in a room u is
// joined to.
func (s *Service) PresenceChanged(ctx context.Context, u id.UserID) error {
	if s.PresenceOf == nil || !s.anyEphemeral() {
		return nil
	}
	seen := map[string]bool{}
	var regs []*Registration
	add := func(rs []*Registration) {
		for _, r := range rs {
			if !seen[r.ID] {
				seen[r.ID] = true
				regs = append(regs, r)
			}
		}
	}
	for _, reg := range s.Registry.All() {
		if reg.Ephemeral() && reg.BaseURL() != "" && reg.OwnsUser(u) {
			add([]*Registration{reg})
		}
	}
	memberships, err := s.Rooms.UserRooms(ctx, u)
	if err != nil {
		return err
	}
	for _, m := range memberships {
		if m.Membership != "join" {
			continue
		}
		rs, err := s.interestedIn(ctx, m.RoomID, nil, true)
		if err != nil {
			return err
		}
		add(rs)
	}
	if len(regs) == 0 {
		return nil
	}
	content, err := s.PresenceOf(ctx, u)
	if err != nil {
		return err
	}
	data, _ := json.Marshal(map[string]any{"type": "m.presence", "sender": u, "content": content})
	return s.enqueueEphemeral(ctx, regs, data, ephemeralStaleAfter)
}

// anyEphemeral reports whether some service asked for ephemeral data.
func (s *Service) anyEphemeral() bool {
	if s.Q == nil {
		return false
	}
	for _, reg := range s.Registry.All() {
		if reg.Ephemeral() {
			return true
		}
	}
	return false
}

// enqueueEphemeral writes one datum into each service's outbox and wakes
// their senders.
func (s *Service) enqueueEphemeral(ctx context.Context, regs []*Registration, data []byte, staleAfter time.Duration) error {
	now := s.now()
	ttl := now.Add(staleAfter).Unix()
	msgs := make([]queue.Message, 0, len(regs))
	for _, reg := range regs {
		var r [6]byte
		_, _ = rand.Read(r[:])
		sk := fmt.Sprintf("%s%016d#%s", ephPrefix, now.UnixMicro(), hex.EncodeToString(r[:]))
		if err := s.T.Put(ctx, table.Item{PK: asPK(reg.ID), SK: sk, Data: data, TTL: ttl}, table.IfNotExists()); err != nil {
			return err
		}
		msgs = append(msgs, s.wake(reg.ID, sk))
	}
	return s.Q.Send(ctx, msgs...)
}
