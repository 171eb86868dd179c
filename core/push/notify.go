package push

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules"

	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/stream"
	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/core/userdata"
)

// Notifications are kept this long.
const notificationTTL = 90 * 24 * time.Hour

// Notification is one stored notification of a user.
type Notification struct {
	RoomID    id.RoomID         `json:"room_id"`
	EventID   id.EventID        `json:"event_id"`
	Seq       int64             `json:"seq"`
	TS        int64             `json:"ts"`
	Actions   []json.RawMessage `json:"actions"`
	Highlight bool              `json:"highlight,omitempty"`
	// Thread is the thread root of a threaded event.
	Thread id.EventID `json:"thread,omitempty"`
	// Pushed records that the push gateways have been sent it.
	Pushed bool `json:"pushed,omitempty"`
	// Pos is the event's stream position (the item's sort key).
	Pos int64 `json:"-"`
}

// Key layout (ARCHITECTURE.md): both in the user's partition.
// notif#<pos> lists all notifications newest last (GET /notifications);
// nr#<room>\x1f<seq> indexes them by room so unread counts are one small
// range query from the read receipt on.
func userPK(u id.UserID) string { return "user#" + string(u) }
func notifSK(pos int64) string  { return fmt.Sprintf("notif#%016d", pos) }
func roomNotifSK(r id.RoomID, seq int64) string {
	return fmt.Sprintf("nr#%s\x1f%016d", r, seq)
}

// Evaluator runs each persisted event through the push rules of the
// room's local members and records their notifications. It runs as a
// fan-out handler (core/fanout), after the event's own transaction, and is
// idempotent, so a redelivered or retried event changes nothing:
//   - every member's push rules and ignore list are read with one GetMany;
//   - a notification is two plain writes, not a transaction (which would
//     cost twice the write units): the unread marker (nr#…, keyed by room
//     and room sequence, so rewriting it cannot count it twice) and the
//     notification itself (notif#…, IfNotExists keyed by stream position,
//     so a redelivery keeps the stored one and its pushed flag);
//   - then one entry per event (not per member) in the Changes stream
//     names the room whose counts changed, so waiting syncs wake and
//     re-read the counts. It is appended after the markers: a sync that
//     reads the entry finds them. A repeated entry only makes a sync
//     re-read counts that did not change.
//
// Gateway delivery is marked on the notification once done, so a
// redelivery only repeats pushes that may not have gone out.
type Evaluator struct {
	T          table.Table
	Rooms      *rooms.Service
	Rules      *Rules
	ServerName string
	Log        *slog.Logger
	Now        func() time.Time
	// Gateway, if set, sends each new notification to the user's HTTP
	// pushers.
	Gateway *Gateway
	// Changes, if set, is the server-wide stream recording "the unread
	// counts of a room changed" (one entry per notifying event);
	// ChangeEntry is the entry written for a room. Notify is called with
	// the stream's name after an entry is appended.
	Changes     *stream.Stream
	ChangeEntry func(room id.RoomID) []byte
	Notify      func(stream string)
}

// Handle is the fan-out handler (core/fanout.Handler): Evaluate, then
// push what is new to the users' gateways.
func (e *Evaluator) Handle(ctx context.Context, ev *rooms.Event) error {
	return e.Evaluate(ctx, ev)
}

func (e *Evaluator) local(u id.UserID) bool {
	_, server, err := u.Parse()
	return err == nil && server == e.ServerName
}

// ThreadOf is the thread root an event belongs to ("" for the main
// timeline): the event it relates to with rel_type m.thread.
func ThreadOf(content json.RawMessage) id.EventID {
	var c struct {
		RelatesTo *struct {
			RelType string     `json:"rel_type"`
			EventID id.EventID `json:"event_id"`
		} `json:"m.relates_to"`
	}
	if json.Unmarshal(content, &c) == nil && c.RelatesTo != nil && c.RelatesTo.RelType == "m.thread" {
		return c.RelatesTo.EventID
	}
	return ""
}

// Evaluate records the notifications ev causes (and delivers them to the
// push gateways when a Gateway is set). Safe to repeat for the same event.
func (e *Evaluator) Evaluate(ctx context.Context, ev *rooms.Event) error {
	if ev.Outlier || ev.Rejected || ev.SoftFailed || ev.Seq == 0 {
		return nil
	}
	// The room as it was right after the event (the worker may run well
	// after it; later joiners must not be notified of it).
	stateIDs, err := e.Rooms.StateIDsAt(ctx, ev, true)
	if err != nil {
		return err
	}
	var memberIDs []id.EventID
	var plID id.EventID
	for k, eid := range stateIDs {
		switch k.Type {
		case "m.room.member":
			memberIDs = append(memberIDs, eid)
		case "m.room.power_levels":
			if k.StateKey == "" {
				plID = eid
			}
		}
	}
	members, err := e.Rooms.EventsByID(ctx, memberIDs)
	if err != nil {
		return err
	}
	names := map[id.UserID]string{}
	var targets []id.UserID
	joined := 0
	for _, m := range members {
		if m.StateKey == nil {
			continue
		}
		var c struct {
			Membership  string `json:"membership"`
			DisplayName string `json:"displayname"`
		}
		_ = json.Unmarshal(m.Content, &c)
		u := id.UserID(*m.StateKey)
		invitedNow := c.Membership == "invite" && m.EventID == ev.EventID
		if c.Membership == "join" {
			joined++
		}
		if (c.Membership == "join" || invitedNow) && u != ev.Sender && e.local(u) {
			targets = append(targets, u)
			names[u] = c.DisplayName
		}
	}
	if len(targets) == 0 {
		return nil
	}
	mev := &event.Event{Type: event.Type{Type: ev.Type}, Sender: ev.Sender, RoomID: ev.RoomID,
		StateKey: ev.StateKey, ID: ev.EventID, Timestamp: ev.OriginServerTS}
	mev.Content.VeryRaw = ev.Content
	if err := json.Unmarshal(ev.Content, &mev.Content.Raw); err != nil || mev.Content.Raw == nil {
		mev.Content.Raw = map[string]any{}
	}
	var pl *event.PowerLevelsEventContent
	if plev, err := e.Rooms.Event(ctx, plID); plID != "" && err == nil && plev != nil {
		pl = &event.PowerLevelsEventContent{}
		if json.Unmarshal(plev.Content, pl) != nil {
			pl = nil
		}
	}
	thread := ThreadOf(ev.Content)
	// Every member's push rules and ignore list in one read.
	ads, err := e.Rules.UserData.GlobalOfUsers(ctx, targets, userdata.TypeIgnoredList, userdata.TypePushRules)
	if err != nil {
		return err
	}
	// Decide first (CPU only), then write the members' notifications a
	// few at a time: each is two independent idempotent writes, and one
	// after the other they would make a large room's event take a
	// round trip per member.
	type pending struct {
		u         id.UserID
		rule      *Rule
		highlight bool
	}
	var todo []pending
	for _, u := range targets {
		if c := ads[u][userdata.TypeIgnoredList]; c != nil && userdata.ParseIgnored(c)[ev.Sender] {
			continue
		}
		rs := Merge(u, ads[u][userdata.TypePushRules])
		rule := rs.Evaluable().GetMatchingRule(&roomView{name: names[u], count: joined, pl: pl}, mev)
		if rule == nil {
			continue
		}
		should := rule.Actions.Should()
		if !should.Notify {
			continue
		}
		todo = append(todo, pending{u, rs.Find(string(rule.Type), rule.RuleID), should.Highlight})
	}
	stored := make([]Notification, len(todo))
	errs := make([]error, len(todo))
	sem := make(chan struct{}, recordParallel)
	var wg sync.WaitGroup
	for i, p := range todo {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			stored[i], errs[i] = e.record(ctx, p.u, ev, p.rule, p.highlight, thread)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	recorded := len(todo) > 0
	var deliveries []delivery
	for i, p := range todo {
		if e.Gateway != nil && !stored[i].Pushed {
			deliveries = append(deliveries, delivery{p.u, stored[i]})
		}
	}
	if recorded {
		if err := e.announce(ctx, ev.RoomID); err != nil {
			return err
		}
	}
	return e.deliver(ctx, ev, deliveries)
}

// announce appends the room to the Changes stream (after the markers, so a
// sync that reads the entry finds them) and wakes this process's syncs.
// It claims the slot with a plain conditional put instead of
// stream.Append's transaction: one write unit, not two.
func (e *Evaluator) announce(ctx context.Context, room id.RoomID) error {
	st := e.Changes
	if st == nil || e.ChangeEntry == nil {
		return nil
	}
	entry := e.ChangeEntry(room)
	if _, ok := table.SequencerOf(e.T); ok {
		// An engine one process owns commits a claim in one write anyway.
		if _, err := st.Append(ctx, func(int64) ([]byte, []table.Op, error) { return entry, nil, nil }); err != nil {
			return err
		}
		if e.Notify != nil {
			e.Notify(st.Name)
		}
		return nil
	}
	for range 10 {
		pos, err := st.Allocate(ctx)
		if err != nil {
			return err
		}
		claim := st.ClaimOp(pos, entry)
		err = e.T.Put(ctx, claim.Item, claim.Cond)
		if errors.Is(err, table.ErrConditionFailed) {
			continue // a reader voided the slot: take another
		}
		if err != nil {
			_ = st.Void(ctx, pos)
			return err
		}
		if e.Notify != nil {
			e.Notify(st.Name)
		}
		return nil
	}
	return fmt.Errorf("push: stream %s: could not claim a slot", st.Name)
}

type delivery struct {
	user id.UserID
	n    Notification
}

// recordParallel is how many members' notifications one event writes at
// once.
const recordParallel = 8

// gatewayBudget bounds the time one event's gateway deliveries may take
// (they run in parallel): the fan-out worker must not stall on a dead
// gateway.
const gatewayBudget = 20 * time.Second

// deliver pushes the notifications to the users' gateways in parallel and
// marks each as pushed. A gateway that fails is logged and passed over
// (Gateway.Notify retries it a few times): it does not hold up the event.
func (e *Evaluator) deliver(ctx context.Context, ev *rooms.Event, ds []delivery) error {
	if len(ds) == 0 {
		return nil
	}
	gctx, cancel := context.WithTimeout(ctx, gatewayBudget)
	defer cancel()
	errs := make([]error, len(ds))
	var wg sync.WaitGroup
	for i, d := range ds {
		wg.Go(func() {
			n, err := e.Gateway.notify(gctx, d.user, ev, d.n.Actions)
			if err != nil {
				errs[i] = err
				return
			}
			if n > 0 { // without pushers there is nothing to remember
				errs[i] = e.markPushed(ctx, d.user, d.n)
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil && e.Log != nil {
			e.Log.Warn("push delivery failed", "user", ds[i].user, "event", ev.EventID, "err", err)
		}
	}
	return nil
}

func (e *Evaluator) markPushed(ctx context.Context, u id.UserID, n Notification) error {
	n.Pushed = true
	data, _ := json.Marshal(n)
	it, err := e.T.Get(ctx, table.Key{PK: userPK(u), SK: notifSK(n.Pos)})
	if errors.Is(err, table.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	it.Data = data
	return e.T.Put(ctx, it, table.IfExists())
}

// record writes u's notification for ev unless it exists, and returns the
// stored one. Both writes are idempotent (see Evaluator).
func (e *Evaluator) record(ctx context.Context, u id.UserID, ev *rooms.Event, rule *Rule, highlight bool, thread id.EventID) (Notification, error) {
	now := time.Now
	if e.Now != nil {
		now = e.Now
	}
	n := Notification{RoomID: ev.RoomID, EventID: ev.EventID, Seq: ev.Seq, TS: now().UnixMilli(), Highlight: highlight,
		Thread: thread, Pos: ev.Pos}
	if rule != nil {
		n.Actions = rule.Actions
	}
	data, _ := json.Marshal(n)
	flag, _ := json.Marshal(unreadFlag{H: highlight, T: thread})
	ttl := now().Add(notificationTTL).Unix()
	// The marker is the same item however often it is written: counts
	// (one item per room sequence) cannot grow on a repeat.
	if err := e.T.Put(ctx, table.Item{PK: userPK(u), SK: roomNotifSK(ev.RoomID, ev.Seq), Data: flag, TTL: ttl}, table.Cond{}); err != nil {
		return n, err
	}
	err := e.T.Put(ctx, table.Item{PK: userPK(u), SK: notifSK(ev.Pos), Data: data, TTL: ttl}, table.IfNotExists())
	if errors.Is(err, table.ErrConditionFailed) {
		// Recorded before (a redelivered event): keep what is stored.
		it, err := e.T.Get(ctx, table.Key{PK: userPK(u), SK: notifSK(ev.Pos)})
		if err != nil {
			return n, err
		}
		var old Notification
		if err := json.Unmarshal(it.Data, &old); err != nil {
			return n, err
		}
		old.Pos = ev.Pos
		return old, nil
	}
	return n, err
}

// unreadFlag is the payload of an unread marker (nr#…).
type unreadFlag struct {
	H bool       `json:"h"`
	T id.EventID `json:"t,omitempty"`
}

// roomView is what mautrix's condition matching asks of a room.
type roomView struct {
	name  string
	count int
	pl    *event.PowerLevelsEventContent
}

func (r *roomView) GetOwnDisplayname() string { return r.name }
func (r *roomView) GetMemberCount() int       { return r.count }
func (r *roomView) GetPowerLevels() *event.PowerLevelsEventContent {
	if r.pl == nil {
		return &event.PowerLevelsEventContent{}
	}
	return r.pl
}

// Evaluable converts the ruleset to mautrix's form for matching.
func (rs Ruleset) Evaluable() *pushrules.PushRuleset {
	raw, _ := json.Marshal(rs)
	var out pushrules.PushRuleset
	_ = json.Unmarshal(raw, &out)
	// The room and sender maps keep no order, which is harmless: their
	// rule ids are distinct rooms and senders, so at most one matches.
	return &out
}

// Counts returns the notification and highlight counts of u in room after
// room sequence afterSeq, counting at most max notifications.
func Counts(ctx context.Context, t table.Table, u id.UserID, room id.RoomID, afterSeq int64, max int) (notif, highlight int, err error) {
	q := table.Query{PK: userPK(u), From: roomNotifSK(room, afterSeq+1), To: fmt.Sprintf("nr#%s\x1f~", room), Limit: max}
	for notif < max {
		page, err := t.Query(ctx, q)
		if err != nil {
			return 0, 0, err
		}
		for _, it := range page.Items {
			if notif == max {
				break
			}
			var f struct {
				H bool `json:"h"`
			}
			_ = json.Unmarshal(it.Data, &f)
			notif++
			if f.H {
				highlight++
			}
		}
		if page.Next == "" {
			break
		}
		q.Cursor = page.Next
	}
	return notif, highlight, nil
}

// List returns u's notifications before stream position before (0: the
// newest), newest first, at most limit; with onlyHighlight, highlights only.
// next is the position to continue from (0: no more).
func List(ctx context.Context, t table.Table, u id.UserID, before int64, limit int, onlyHighlight bool) (out []Notification, next int64, err error) {
	q := table.Query{PK: userPK(u), From: "notif#", To: "notif#~", Reverse: true}
	if before > 0 {
		q.To = notifSK(before - 1)
	}
	for {
		page, err := t.Query(ctx, q)
		if err != nil {
			return nil, 0, err
		}
		for _, it := range page.Items {
			var n Notification
			if json.Unmarshal(it.Data, &n) != nil {
				continue
			}
			fmt.Sscanf(strings.TrimPrefix(it.SK, "notif#"), "%d", &n.Pos)
			if onlyHighlight && !n.Highlight {
				continue
			}
			if len(out) == limit {
				return out, out[len(out)-1].Pos, nil
			}
			out = append(out, n)
		}
		if page.Next == "" {
			return out, 0, nil
		}
		q.Cursor = page.Next
	}
}

// Marker is one unread notification marker of a room: its room sequence,
// highlight flag and thread root ("" for the main timeline).
type Marker struct {
	Seq       int64
	Highlight bool
	Thread    id.EventID
}

// Markers returns u's unread markers in room after room sequence
// afterSeq, oldest first, at most max (for per-thread counts).
func Markers(ctx context.Context, t table.Table, u id.UserID, room id.RoomID, afterSeq int64, max int) ([]Marker, error) {
	q := table.Query{PK: userPK(u), From: roomNotifSK(room, afterSeq+1), To: fmt.Sprintf("nr#%s\x1f~", room), Limit: max}
	var out []Marker
	for len(out) < max {
		page, err := t.Query(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, it := range page.Items {
			if len(out) == max {
				break
			}
			var f unreadFlag
			_ = json.Unmarshal(it.Data, &f)
			var seq int64
			fmt.Sscanf(it.SK[strings.LastIndexByte(it.SK, 0x1f)+1:], "%d", &seq)
			out = append(out, Marker{Seq: seq, Highlight: f.H, Thread: f.T})
		}
		if page.Next == "" {
			break
		}
		q.Cursor = page.Next
	}
	return out, nil
}
