package clientsync

import (
	"context"
	"encoding/json"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/ephemeral"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/userdata"
)

// UnreadSource gives the counts recorded when events were persisted (the
// push rules' notifications, core/push): a user's notifications and
// highlights in a room after room sequence afterSeq, at most max.
type UnreadSource interface {
	Counts(ctx context.Context, u id.UserID, room id.RoomID, afterSeq int64, max int) (notif, highlight int, err error)
	// Markers lists the notifications after afterSeq one by one, oldest
	// first, with their threads (for unread_thread_notifications).
	Markers(ctx context.Context, u id.UserID, room id.RoomID, afterSeq int64, max int) ([]UnreadMarker, error)
}

// UnreadMarker is one recorded notification: room sequence, highlight,
// thread root ("" for the main timeline).
type UnreadMarker struct {
	Seq       int64
	Highlight bool
	Thread    id.EventID
}

// maxThreadedScan bounds the notifications read per room for per-thread
// counts (read from the unthreaded receipt, which may be older).
const maxThreadedScan = 500

// UnreadChangedType is the type of the entries the push evaluator writes
// to a user's account data stream when it records a notification: not
// account data (nothing is stored under it), only "the unread counts of
// this room changed", so waiting syncs wake (in other processes too, by
// the stream's counter) and report the room's counts even when the event
// itself was sent in an earlier response.
const UnreadChangedType = "cirrus.internal.unread_changed"

// UnreadChangedEntry is the stream entry for a room's unread change.
func UnreadChangedEntry(room id.RoomID) []byte {
	b, _ := json.Marshal(userdata.AccountDataRef{RoomID: room, Type: UnreadChangedType})
	return b
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
		if r.s.Unread != nil && r.f.Room.Timeline.UnreadThreadNotifications {
			if u, jr.UnreadThreadNotifications, err = r.threadedUnread(ctx, room); err != nil {
				return err
			}
		} else if r.s.Unread != nil {
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

// threadedUnread splits the room's counts by thread: the main timeline's
// (after the unthreaded and the main receipt) and each thread's (after the
// unthreaded receipt and the thread's own), never counting from before the
// user's join.
func (r *run) threadedUnread(ctx context.Context, room id.RoomID) (*Unread, map[id.EventID]*Unread, error) {
	seqs, err := r.s.Ephemeral.ReadSeqs(ctx, r.me(), room, []string{"", ephemeral.ThreadMain})
	if err != nil {
		return nil, nil, err
	}
	// Everything up to the unthreaded receipt is read, and nothing from
	// before the user's join counts.
	base := seqs[""]
	if rec := r.w.mshipByRoom[room]; rec != nil {
		if ev, err := r.s.Rooms.Event(ctx, rec.EventID); err == nil {
			base = max(base, ev.Seq)
		}
	}
	ms, err := r.s.Unread.Markers(ctx, r.me(), room, base, maxThreadedScan)
	if err != nil {
		return nil, nil, err
	}
	var threads []string
	seen := map[id.EventID]bool{}
	for _, m := range ms {
		if m.Thread != "" && !seen[m.Thread] {
			seen[m.Thread] = true
			threads = append(threads, string(m.Thread))
		}
	}
	tseqs, err := r.s.Ephemeral.ReadSeqs(ctx, r.me(), room, threads)
	if err != nil {
		return nil, nil, err
	}
	main := &Unread{}
	var byThread map[id.EventID]*Unread
	for _, m := range ms {
		if m.Thread == "" {
			if m.Seq <= seqs[ephemeral.ThreadMain] {
				continue
			}
			main.NotificationCount++
			if m.Highlight {
				main.HighlightCount++
			}
			continue
		}
		if m.Seq <= tseqs[string(m.Thread)] {
			continue
		}
		if byThread == nil {
			byThread = map[id.EventID]*Unread{}
		}
		c := byThread[m.Thread]
		if c == nil {
			c = &Unread{}
			byThread[m.Thread] = c
		}
		c.NotificationCount++
		if m.Highlight {
			c.HighlightCount++
		}
	}
	return main, byThread, nil
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
