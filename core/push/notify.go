package push

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules"

	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/table"
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
	// Pos is the event's stream position (the item's sort key).
	Pos int64 `json:"-"`
}

// Key layout (not yet in ARCHITECTURE.md): both in the user's partition.
// notif#<pos> lists all notifications newest last (GET /notifications);
// nr#<room>\x1f<seq> indexes them by room so unread counts are one small
// range query from the read receipt on.
func userPK(u id.UserID) string { return "user#" + string(u) }
func notifSK(pos int64) string  { return fmt.Sprintf("notif#%016d", pos) }
func roomNotifSK(r id.RoomID, seq int64) string {
	return fmt.Sprintf("nr#%s\x1f%016d", r, seq)
}

// Evaluator runs each persisted event through the push rules of the
// room's local members and records their notifications.
type Evaluator struct {
	T          table.Table
	Rooms      *rooms.Service
	Rules      *Rules
	ServerName string
	Log        *slog.Logger
	Now        func() time.Time
	// Gateway, if set, sends each notification to the user's HTTP
	// pushers, in the background (after the event's hooks have returned).
	Gateway *Gateway
}

// OnPersist is the room engine hook (errors are logged: the event is
// already committed).
func (e *Evaluator) OnPersist(ev *rooms.Event) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Evaluate(ctx, ev); err != nil && e.Log != nil {
		e.Log.Warn("push rule evaluation failed", "event", ev.EventID, "err", err)
	}
}

func (e *Evaluator) local(u id.UserID) bool {
	_, server, err := u.Parse()
	return err == nil && server == e.ServerName
}

// Evaluate records the notifications ev causes.
func (e *Evaluator) Evaluate(ctx context.Context, ev *rooms.Event) error {
	if ev.Outlier || ev.Rejected || ev.SoftFailed || ev.Seq == 0 {
		return nil
	}
	members, err := e.Rooms.CurrentState(ctx, ev.RoomID, "m.room.member")
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
	if plev, err := e.Rooms.CurrentStateEvent(ctx, ev.RoomID, "m.room.power_levels", ""); err == nil && plev != nil {
		pl = &event.PowerLevelsEventContent{}
		if json.Unmarshal(plev.Content, pl) != nil {
			pl = nil
		}
	}
	for _, u := range targets {
		ignored, err := e.Rules.UserData.IgnoredUsers(ctx, u)
		if err != nil {
			return err
		}
		if ignored[ev.Sender] {
			continue
		}
		rs, err := e.Rules.Get(ctx, u)
		if err != nil {
			return err
		}
		rule := rs.Evaluable().GetMatchingRule(&roomView{name: names[u], count: joined, pl: pl}, mev)
		if rule == nil {
			continue
		}
		should := rule.Actions.Should()
		if !should.Notify {
			continue
		}
		r := rs.Find(string(rule.Type), rule.RuleID)
		if err := e.record(ctx, u, ev, r, should.Highlight); err != nil {
			return err
		}
		if e.Gateway != nil && r != nil {
			go e.push(u, ev, r.Actions)
		}
	}
	return nil
}

func (e *Evaluator) push(u id.UserID, ev *rooms.Event, actions []json.RawMessage) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := e.Gateway.Notify(ctx, u, ev, actions); err != nil && e.Log != nil {
		e.Log.Warn("push delivery failed", "user", u, "event", ev.EventID, "err", err)
	}
}

func (e *Evaluator) record(ctx context.Context, u id.UserID, ev *rooms.Event, rule *Rule, highlight bool) error {
	now := time.Now
	if e.Now != nil {
		now = e.Now
	}
	n := Notification{RoomID: ev.RoomID, EventID: ev.EventID, Seq: ev.Seq, TS: now().UnixMilli(), Highlight: highlight}
	if rule != nil {
		n.Actions = rule.Actions
	}
	data, _ := json.Marshal(n)
	flag, _ := json.Marshal(map[string]bool{"h": highlight})
	ttl := now().Add(notificationTTL).Unix()
	return e.T.Transact(ctx, []table.Op{
		table.Put(table.Item{PK: userPK(u), SK: notifSK(ev.Pos), Data: data, TTL: ttl}, table.Cond{}),
		table.Put(table.Item{PK: userPK(u), SK: roomNotifSK(ev.RoomID, ev.Seq), Data: flag, TTL: ttl}, table.Cond{}),
	})
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
