// Package slidingsync answers simplified sliding sync (MSC4186,
// POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync), the
// sync Element X uses: the client names lists (filters plus ranges over the
// user's rooms sorted by recent activity) and room subscriptions, and gets
// the rooms in them that it has not seen or that changed, plus extensions
// (to-device, E2EE, account data, receipts, typing).
//
// A connection (user, device, conn_id) keeps its state in the table
// (conn.go), one item per position, so any Lambda instance can answer the
// next request. Changes are found by reading the same streams /v3/sync
// reads (core/clientsync), after the positions the connection stored;
// waiting uses clientsync's Notifier and Waker.
package slidingsync

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/clientsync"
	"github.com/cirrus-matrix/cirrus/core/ephemeral"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/core/userdata"
)

// MaxBehind is how far behind the event stream a connection may fall
// before its position is refused with M_UNKNOWN_POS.
const MaxBehind = 100000

// Service answers sliding sync requests.
type Service struct {
	T table.Table
	// Sync is the /v3/sync service whose streams, notifier, waker, unread
	// counts and E2EE source sliding sync shares.
	Sync      *clientsync.Service
	Rooms     *rooms.Service
	UserData  *userdata.Service
	Ephemeral *ephemeral.Service
	// ConnTTL is how long an unused position stays valid (DefaultConnTTL).
	ConnTTL time.Duration
	Log     *slog.Logger
	Now     func() time.Time
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Service) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

// Response is the sliding sync answer.
type Response struct {
	Pos        string                `json:"pos"`
	TxnID      string                `json:"txn_id,omitempty"`
	Lists      map[string]ListResult `json:"lists"`
	Rooms      map[id.RoomID]*Room   `json:"rooms"`
	Extensions map[string]any        `json:"extensions"`
}

// ListResult is one list's answer: only its count (MSC4186 has no ops).
type ListResult struct {
	Count int `json:"count"`
}

// Hero is one of a room's heroes.
type Hero struct {
	UserID      id.UserID `json:"user_id"`
	DisplayName string    `json:"displayname,omitempty"`
	AvatarURL   string    `json:"avatar_url,omitempty"`
}

// Room is one room of the answer.
type Room struct {
	Name             *string           `json:"name,omitempty"`
	Avatar           *string           `json:"avatar,omitempty"`
	Heroes           []Hero            `json:"heroes,omitempty"`
	Initial          bool              `json:"initial,omitempty"`
	ExpandedTimeline bool              `json:"expanded_timeline,omitempty"`
	IsDM             bool              `json:"is_dm,omitempty"`
	Membership       string            `json:"membership,omitempty"`
	Lists            []string          `json:"lists,omitempty"`
	RequiredState    []json.RawMessage `json:"required_state,omitempty"`
	Timeline         []json.RawMessage `json:"timeline,omitempty"`
	PrevBatch        string            `json:"prev_batch,omitempty"`
	Limited          bool              `json:"limited,omitempty"`
	NumLive          *int              `json:"num_live,omitempty"`
	JoinedCount      *int              `json:"joined_count,omitempty"`
	InvitedCount     *int              `json:"invited_count,omitempty"`
	NotificationCnt  *int              `json:"notification_count,omitempty"`
	HighlightCnt     *int              `json:"highlight_count,omitempty"`
	BumpStamp        *int64            `json:"bump_stamp,omitempty"`
	InviteState      []json.RawMessage `json:"invite_state,omitempty"`
	StrippedState    []json.RawMessage `json:"stripped_state,omitempty"`
}

// Call is one request, with who made it.
type Call struct {
	User    id.UserID
	Device  id.DeviceID
	Req     *Request
	Timeout time.Duration
}

// Handle answers one request.
func (s *Service) Handle(ctx context.Context, c *Call) (*Response, error) {
	req := c.Req
	if err := req.Validate(); err != nil {
		return nil, err
	}
	presence := req.SetPresence
	if presence == "" {
		presence = userdata.PresenceOnline
	}
	if err := s.UserData.TouchPresence(ctx, c.User, presence); err != nil {
		s.log().Warn("sliding sync: recording presence", "user", c.User, "err", err)
	}
	pk := connPK(c.User, c.Device, req.ConnID)
	r := &run{s: s, c: c, me: c.User}
	if req.Pos != "" {
		pos, ok := parsePos(req.Pos)
		if !ok {
			return nil, errUnknownPos()
		}
		st, err := s.load(ctx, pk, pos)
		if err != nil {
			return nil, err
		}
		// Far behind the event stream, starting again is cheaper than
		// catching up (MSC4186 lets the server expire the connection).
		if latest, err := s.Rooms.Events.Latest(ctx); err != nil {
			return nil, err
		} else if latest-st.Tok.Events > MaxBehind {
			return nil, errUnknownPos()
		}
		s.forget(ctx, pk, st.Prev)
		r.loadedPos = pos
		st.Prev = pos
		if r.loaded, err = json.Marshal(st); err != nil {
			return nil, err
		}
		r.st, r.incremental = st, true
	} else {
		tok, err := s.Sync.Heads(ctx, c.User, c.Device)
		if err != nil {
			return nil, err
		}
		r.st = &connState{Tok: tok, Rooms: map[id.RoomID]*roomState{}}
	}
	r.start = r.st.Tok
	if err := r.prepare(ctx); err != nil {
		return nil, err
	}
	var sub *clientsync.Subscription
	timeout := c.Timeout
	maxWait := s.Sync.MaxWait
	if maxWait <= 0 {
		maxWait = clientsync.DefaultMaxWait
	}
	timeout = min(timeout, maxWait)
	if !r.incremental {
		timeout = 0
	}
	if timeout > 0 {
		// Subscribe before reading, so a write between our read and our
		// wait still wakes us.
		sub = s.Sync.Notifier.Subscribe(c.User, c.Device)
		defer sub.Close()
	}
	deadline := s.now().Add(timeout)
	if timeout > 0 {
		r.signals = s.Sync.SignalKeys(c.User)
	}
	for {
		if err := r.readSignals(ctx); err != nil {
			return nil, err
		}
		if err := r.scan(ctx); err != nil {
			return nil, err
		}
		plan, err := r.plan(ctx)
		if err != nil {
			return nil, err
		}
		if !plan.empty() || r.more || !s.now().Before(deadline) {
			resp, err := r.respond(ctx, plan)
			if err != nil {
				return nil, err
			}
			s.Sync.MoveMarks(ctx, c.User, c.Device, r.start, r.st.Tok)
			var pos int64
			if r.incremental && r.unchanged() {
				// Nothing moved and nothing was sent: the client may keep
				// its position (no write for an idle long-poll).
				pos = r.loadedPos
			} else if pos, err = s.save(ctx, pk, r.st); err != nil {
				return nil, err
			}
			resp.Pos = strconv.FormatInt(pos, 10)
			resp.TxnID = req.TxnID
			return resp, nil
		}
		if err := r.wait(ctx, sub, deadline); err != nil {
			return nil, err
		}
	}
}

// unchanged reports whether the connection state is still what was
// loaded (so its position can be answered again).
func (r *run) unchanged() bool {
	b, err := json.Marshal(r.st)
	return err == nil && bytes.Equal(b, r.loaded)
}

// wait blocks until a watched stream may have moved, the deadline passes or
// a typing notice is due to expire.
func (r *run) wait(ctx context.Context, sub *clientsync.Subscription, deadline time.Time) error {
	if sub.Take() != 0 {
		return nil
	}
	until := deadline
	if r.typingDue != nil && r.typingDue.Before(until) {
		until = *r.typingDue
	}
	wctx, cancel := context.WithDeadline(ctx, until)
	defer cancel()
	polled := make(chan struct{}, 1)
	if w := r.s.Sync.Waker; w != nil {
		keys, heads, ofUser := r.watched()
		watch := w.Watch
		if sw, ok := w.(clientsync.SignalWaker); ok && r.seen != nil {
			// Poll the two wake-up items; only the counters their writers
			// move are read when one does.
			sc := make([][]int, 2)
			for i := range keys {
				if ofUser[i] {
					sc[1] = append(sc[1], i)
				} else {
					sc[0] = append(sc[0], i)
				}
			}
			ws := &clientsync.WatchSet{Counters: keys, Heads: heads, Signals: r.signals, Seen: slices.Clone(r.seen), SignalCounters: sc}
			watch = func(ctx context.Context, _ []table.Key, _ []int64) ([]int, error) { return sw.WatchSignals(ctx, ws) }
		}
		go func() {
			moved, err := watch(wctx, keys, heads)
			if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				r.s.log().Warn("sliding sync: watching stream counters", "err", err)
			}
			if moved != nil {
				polled <- struct{}{}
			}
		}()
	}
	select {
	case <-sub.C:
	case <-polled:
	case <-wctx.Done():
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	sub.Take()
	return nil
}

// watched are the counters a waiting request watches, with the positions
// it has read up to, and whether each one's writers bump the user's own
// wake-up item (else the global one).
func (r *run) watched() ([]table.Key, []int64, []bool) {
	s := r.s
	t := r.st.Tok
	keys := []table.Key{s.Rooms.Events.CounterKey(), s.UserData.AccountDataStream(r.me).CounterKey(),
		s.Ephemeral.Receipts.CounterKey(), s.Ephemeral.Typing.CounterKey()}
	heads := []int64{t.Events, t.AccountData, t.Receipts, t.Typing}
	ofUser := []bool{false, clientsync.SignalOfUser(clientsync.KindAccountData), false, false}
	if r.toDeviceOn() {
		keys = append(keys, s.Ephemeral.ToDeviceStream(r.me, r.c.Device).CounterKey())
		heads = append(heads, r.tdNext)
		ofUser = append(ofUser, clientsync.SignalOfUser(clientsync.KindToDevice))
	}
	if un := s.Sync.UnreadChanges; un != nil {
		keys = append(keys, un.CounterKey())
		heads = append(heads, t.Unread)
		ofUser = append(ofUser, false)
	}
	if s.Sync.DeviceLists != nil && s.Sync.DeviceListCounter.PK != "" && on(r.c.Req.Extensions.E2EE) {
		keys = append(keys, s.Sync.DeviceListCounter)
		heads = append(heads, t.DeviceLists)
		ofUser = append(ofUser, false)
	}
	return keys, heads, ofUser
}

// readSignals reads the wake-up items (strongly) before the streams are
// read, so a write after that read moves them past what is recorded.
func (r *run) readSignals(ctx context.Context) error {
	if len(r.signals) == 0 {
		return nil
	}
	items, err := r.s.T.GetMany(ctx, r.signals)
	if err != nil {
		return err
	}
	seen := make([]int64, len(r.signals))
	for _, it := range items {
		if i := slices.Index(r.signals, it.Key()); i >= 0 {
			seen[i] = it.Num
		}
	}
	r.seen = seen
	return nil
}
