package clientsync

import (
	"context"
	"encoding/json"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/rooms"
)

// UnreadSource gives the counts recorded when events were persisted (the
// push rules' notifications, core/push): a user's notifications and
// highlights in a room after room sequence afterSeq, at most max.
type UnreadSource interface {
	Counts(ctx context.Context, u id.UserID, room id.RoomID, afterSeq int64, max int) (notif, highlight int, err error)
}

// Without an UnreadSource, unread counts are computed on read, without
// push rules: every message-like event from someone else after the user's read
// receipt counts once, and highlights when it mentions the user (their id
// in m.mentions, or, for events without m.mentions, their display name in
// the body). At most maxUnreadScan events are looked at per room, so counts
// stop at that number.
const maxUnreadScan = 100

// notifying are the event types the default push rules notify for.
var notifying = map[string]bool{
	"m.room.message":   true,
	"m.room.encrypted": true,
	"m.sticker":        true,
	"m.poll.start":     true,
	"m.call.invite":    true,
}

func (r *run) addUnread(ctx context.Context, resp *Response, joined []id.RoomID) error {
	if len(joined) == 0 {
		return nil
	}
	reads, err := r.s.Ephemeral.ReadUpTo(ctx, r.me(), joined)
	if err != nil {
		return err
	}
	for _, room := range joined {
		jr := resp.Rooms.Join[room]
		if jr == nil {
			continue
		}
		var readSeq int64
		rec := r.w.mshipByRoom[room]
		if rc, ok := reads[room]; ok {
			readSeq = rc.Seq
		} else if rec != nil {
			// Never read anything: count from the user's join.
			if ev, err := r.s.Rooms.Event(ctx, rec.EventID); err == nil {
				readSeq = ev.Seq
			}
		}
		var u *Unread
		if r.s.Unread != nil {
			n, h, err := r.s.Unread.Counts(ctx, r.me(), room, readSeq, maxUnreadScan)
			if err != nil {
				return err
			}
			u = &Unread{NotificationCount: n, HighlightCount: h}
		} else if u, err = r.unread(ctx, room, readSeq, rec); err != nil {
			return err
		}
		jr.UnreadNotifications = u
	}
	return nil
}

func (r *run) unread(ctx context.Context, room id.RoomID, readSeq int64, rec *rooms.MembershipRecord) (*Unread, error) {
	u := &Unread{}
	page, err := r.s.Rooms.Timeline(ctx, room, rooms.Backward, 0, readSeq, maxUnreadScan)
	if err != nil {
		return nil, err
	}
	var myName *string
	for _, ev := range page.Events {
		if ev.Pos > r.w.head.Events || ev.Sender == r.me() || ev.IsState() || !notifying[ev.Type] ||
			ev.RedactedBy != "" || r.ignored[ev.Sender] || isEdit(ev) {
			continue
		}
		u.NotificationCount++
		var c struct {
			Body     string `json:"body"`
			Mentions *struct {
				UserIDs []id.UserID `json:"user_ids"`
			} `json:"m.mentions"`
		}
		_ = json.Unmarshal(ev.Content, &c)
		switch {
		case c.Mentions != nil:
			for _, m := range c.Mentions.UserIDs {
				if m == r.me() {
					u.HighlightCount++
					break
				}
			}
		case c.Body != "":
			if myName == nil {
				name := r.displayName(ctx, rec)
				myName = &name
			}
			if *myName != "" && strings.Contains(strings.ToLower(c.Body), strings.ToLower(*myName)) {
				u.HighlightCount++
			}
		}
	}
	return u, nil
}

// displayName is the user's display name in the room (from their member
// event), or their localpart.
func (r *run) displayName(ctx context.Context, rec *rooms.MembershipRecord) string {
	if rec != nil {
		if ev, err := r.s.Rooms.Event(ctx, rec.EventID); err == nil {
			var c struct {
				DisplayName string `json:"displayname"`
			}
			_ = json.Unmarshal(ev.Content, &c)
			if c.DisplayName != "" {
				return c.DisplayName
			}
		}
	}
	local, _, _ := r.me().Parse()
	return local
}

func isEdit(ev *rooms.Event) bool {
	var c struct {
		RelatesTo *struct {
			RelType string `json:"rel_type"`
		} `json:"m.relates_to"`
	}
	_ = json.Unmarshal(ev.Content, &c)
	return c.RelatesTo != nil && c.RelatesTo.RelType == "m.replace"
}
