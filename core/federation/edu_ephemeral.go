package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/ephemeral"
	"github.com/cirrus-matrix/cirrus/core/userdata"
)

// EDU types of the ephemeral room data.
const (
	EDUTyping   = "m.typing"
	EDUReceipt  = "m.receipt"
	EDUPresence = "m.presence"
)

// EnableEphemeralEDUs connects typing notices, read receipts and presence
// to federation both ways: local changes go out as EDUs to the servers
// concerned (the room's for typing and receipts, those sharing a room with
// the user for presence), and the EDUs other servers send are checked and
// stored in the same stores, so /sync and GET /presence show them.
func (s *Service) EnableEphemeralEDUs(eph *ephemeral.Service, ud *userdata.Service) {
	s.HandleEDU(EDUTyping, func(ctx context.Context, origin string, c json.RawMessage) error {
		return s.receiveTyping(ctx, eph, origin, c)
	})
	s.HandleEDU(EDUReceipt, func(ctx context.Context, origin string, c json.RawMessage) error {
		return s.receiveReceipts(ctx, eph, origin, c)
	})
	s.HandleEDU(EDUPresence, func(ctx context.Context, origin string, c json.RawMessage) error {
		return s.receivePresence(ctx, ud, origin, c)
	})

	prevTyping := eph.OnLocalTyping
	eph.OnLocalTyping = func(ctx context.Context, r id.RoomID, u id.UserID, typing bool, timeout time.Duration) {
		if prevTyping != nil {
			prevTyping(ctx, r, u, typing, timeout)
		}
		s.sendToRoom(ctx, r, EDUTyping, typingContent{RoomID: r, UserID: u, Typing: typing})
	}
	prevReceipt := eph.OnLocalReceipt
	eph.OnLocalReceipt = func(ctx context.Context, rc ephemeral.Receipt) {
		if prevReceipt != nil {
			prevReceipt(ctx, rc)
		}
		data := receiptData{TS: rc.TS, ThreadID: rc.ThreadID}
		c := receiptContent{rc.RoomID: {rc.Type: {rc.UserID: {EventIDs: []id.EventID{rc.EventID}, Data: data}}}}
		s.sendToRoom(ctx, rc.RoomID, EDUReceipt, c)
	}
	prevPresence := ud.OnPresence
	ud.OnPresence = func(ctx context.Context, u id.UserID) {
		if prevPresence != nil {
			prevPresence(ctx, u)
		}
		if s.isLocal(u) { // remote users' updates came from their server
			s.sendPresence(ctx, ud, u)
		}
	}
}

// sendToRoom sends an EDU about a room to its other servers. A failure is
// logged: the local change stands either way.
func (s *Service) sendToRoom(ctx context.Context, r id.RoomID, typ string, content any) {
	if s.Sender.Q == nil {
		return // not federating
	}
	dests, err := s.RoomDestinations(ctx, r)
	if err == nil {
		err = s.SendEDU(ctx, dests, typ, content)
	}
	if err != nil {
		s.Log.Warn("queueing EDU", "type", typ, "room", r, "err", err)
	}
}

func (s *Service) sendPresence(ctx context.Context, ud *userdata.Service, u id.UserID) {
	if s.Sender.Q == nil {
		return
	}
	dests, err := s.UserDestinations(ctx, u)
	if err != nil || len(dests) == 0 {
		if err != nil {
			s.Log.Warn("presence destinations", "user", u, "err", err)
		}
		return
	}
	st, err := ud.Presence(ctx, u)
	if err != nil {
		s.Log.Warn("reading presence", "user", u, "err", err)
		return
	}
	p := remotePresenceOf(u, st)
	if err := s.SendEDU(ctx, dests, EDUPresence, presenceContent{Push: []userdata.RemotePresence{p}}); err != nil {
		s.Log.Warn("queueing presence EDU", "user", u, "err", err)
	}
}

// ---- wire formats (server-server API, "Typing Notifications", "Receipts", "Presence") ----

type typingContent struct {
	RoomID id.RoomID `json:"room_id"`
	UserID id.UserID `json:"user_id"`
	Typing bool      `json:"typing"`
}

type receiptData struct {
	TS       int64  `json:"ts"`
	ThreadID string `json:"thread_id,omitempty"`
}

type userReceipt struct {
	EventIDs []id.EventID `json:"event_ids"`
	Data     receiptData  `json:"data"`
}

// receiptContent is room → receipt type → user → receipt.
type receiptContent map[id.RoomID]map[string]map[id.UserID]userReceipt

type presenceContent struct {
	Push []userdata.RemotePresence `json:"push"`
}

// ---- inbound ----

// errNotOrigins is an EDU about a user of another server than its sender.
var errNotOrigins = errors.New("user does not belong to the sending server")

// checkRoomUser applies the checks every room EDU passes: the user is the
// origin's, the room is known here and its ACL lets the origin in, and the
// user is joined to it (so the origin is in the room too).
func (s *Service) checkRoomUser(ctx context.Context, origin string, r id.RoomID, u id.UserID) error {
	if serverOf(u) != origin {
		return errNotOrigins
	}
	if ok, err := s.Rooms.HasRoom(ctx, r); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("unknown room %s", r)
	}
	if err := s.checkACL(ctx, r, origin); err != nil {
		return err
	}
	m, err := s.Rooms.Membership(ctx, r, u)
	if err != nil {
		return err
	}
	if m != "join" {
		return fmt.Errorf("%s is not joined to %s", u, r)
	}
	return nil
}

func (s *Service) receiveTyping(ctx context.Context, eph *ephemeral.Service, origin string, raw json.RawMessage) error {
	var c typingContent
	if err := json.Unmarshal(raw, &c); err != nil {
		return err
	}
	if err := s.checkRoomUser(ctx, origin, c.RoomID, c.UserID); err != nil {
		return err
	}
	return eph.SetRemoteTyping(ctx, c.RoomID, c.UserID, c.Typing)
}

func (s *Service) receiveReceipts(ctx context.Context, eph *ephemeral.Service, origin string, raw json.RawMessage) error {
	var c receiptContent
	if err := json.Unmarshal(raw, &c); err != nil {
		return err
	}
	var errs []error
	for r, byType := range c {
		for typ, byUser := range byType {
			// m.read is the only receipt type servers exchange (private
			// receipts stay on their server).
			if typ != ephemeral.ReceiptRead {
				continue
			}
			for u, ur := range byUser {
				if err := s.receiveReceipt(ctx, eph, origin, r, u, ur); err != nil {
					errs = append(errs, fmt.Errorf("%s in %s: %w", u, r, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

func (s *Service) receiveReceipt(ctx context.Context, eph *ephemeral.Service, origin string, r id.RoomID, u id.UserID, ur userReceipt) error {
	if err := s.checkRoomUser(ctx, origin, r, u); err != nil {
		return err
	}
	if ur.Data.ThreadID != "" && !ephemeral.ValidThreadID(ur.Data.ThreadID) {
		return fmt.Errorf("invalid thread_id %q", ur.Data.ThreadID)
	}
	// The furthest of the events named that we have in the room's timeline
	// (a receipt for an event not received yet cannot be placed).
	var best *ephemeral.Receipt
	for _, eid := range ur.EventIDs {
		ev, err := s.Rooms.Event(ctx, eid)
		if err != nil || ev.RoomID != r || ev.Outlier || ev.Rejected || ev.SoftFailed || ev.Seq == 0 {
			continue
		}
		if best == nil || ev.Seq > best.Seq {
			best = &ephemeral.Receipt{RoomID: r, UserID: u, Type: ephemeral.ReceiptRead, ThreadID: ur.Data.ThreadID,
				EventID: eid, TS: ur.Data.TS, Seq: ev.Seq}
		}
	}
	if best == nil {
		return errors.New("none of the receipt's events is known here")
	}
	if best.TS <= 0 {
		best.TS = s.now().UnixMilli()
	}
	return eph.PutRemoteReceipt(ctx, *best)
}

func (s *Service) receivePresence(ctx context.Context, ud *userdata.Service, origin string, raw json.RawMessage) error {
	var c presenceContent
	if err := json.Unmarshal(raw, &c); err != nil {
		return err
	}
	var errs []error
	for _, p := range c.Push {
		if serverOf(p.UserID) != origin {
			errs = append(errs, fmt.Errorf("%s: %w", p.UserID, errNotOrigins))
			continue
		}
		if err := ud.PutRemotePresence(ctx, p); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.UserID, err))
		}
	}
	return errors.Join(errs...)
}
