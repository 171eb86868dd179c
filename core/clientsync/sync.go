// Package clientsync answers the client-server /sync endpoint: initial and
// incremental syncs over the server's streams (room events, account data,
// receipts, typing, to-device, device lists), long-polling until something
// for the user arrives.
//
// A token (token.go) holds one position per stream. An incremental sync
// reads each stream after its position (core/stream never reads past an
// uncommitted slot, so nothing is skipped or repeated), keeps what concerns
// the user, and, if nothing does, waits: in-process writers wake it at once
// through the Notifier; writers in other processes (other Lambda instances)
// are noticed by a Waker that polls the streams' counters.
package clientsync

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/ephemeral"
	"github.com/cirrus-matrix/cirrus/core/filter"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/stream"
	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/core/userdata"
)

// DefaultMaxWait caps a long-poll below API Gateway's 30 s limit.
const DefaultMaxWait = 25 * time.Second

// DeviceListSource supplies the end-to-end encryption parts of /sync
// (core/keys implements it). It is optional: without one, device_lists,
// device_one_time_keys_count and device_unused_fallback_key_types are left
// out of responses.
type DeviceListSource interface {
	// Position is a device-list stream position every earlier change has
	// committed by.
	Position(ctx context.Context) (int64, error)
	// ChangesBetween lists, for viewer, users whose devices changed in
	// (from, to] and users viewer stopped sharing a room with.
	ChangesBetween(ctx context.Context, viewer id.UserID, from, to int64) (changed, left []id.UserID, err error)
	OneTimeKeyCounts(ctx context.Context, u id.UserID, d id.DeviceID) (map[string]int, error)
	UnusedFallbackKeyTypes(ctx context.Context, u id.UserID, d id.DeviceID) ([]string, error)
}

// Service answers /sync.
type Service struct {
	T         table.Table
	Rooms     *rooms.Service
	UserData  *userdata.Service
	Ephemeral *ephemeral.Service
	// Notifier wakes waiters when this process writes (required).
	Notifier *Notifier
	// Waker notices writes of other processes (nil when this process is
	// the only writer: the embedded all-in-one).
	Waker Waker
	// DeviceLists is optional (see DeviceListSource); DeviceListCounter is
	// the key of its stream's counter, for the Waker.
	DeviceLists       DeviceListSource
	DeviceListCounter table.Key
	// Presence, if set, is the stream of presence changes (PresenceChanged
	// appends to it): incremental syncs report the presence of users who
	// share a room with the user.
	Presence *stream.Stream
	// Unread, if set, gives the unread counts the push rules recorded
	// (unread.go); without it they are estimated by scanning the timeline.
	Unread UnreadSource
	// UnreadChanges, if set, is the server-wide stream of rooms whose
	// unread counts changed (written by core/push after it records
	// notifications; entries are UnreadChangedEntry): syncs report those
	// rooms' counts again.
	UnreadChanges *stream.Stream
	// DefaultAccountData, if set, gives global account data a user has by
	// default (the server's push rules): an initial sync includes it for
	// every type the user has not stored yet.
	DefaultAccountData func(u id.UserID) []userdata.AccountData
	// MaxWait caps the timeout a client asks for.
	MaxWait time.Duration
	Log     *slog.Logger
	Now     func() time.Time
}

// Request is one /sync call.
type Request struct {
	User   id.UserID
	Device id.DeviceID
	// Since is nil for an initial sync.
	Since     *Token
	FullState bool
	Timeout   time.Duration
	// Filter is never nil (the zero filter keeps everything).
	Filter *filter.Filter
	// SetPresence is online (the default), unavailable or offline.
	SetPresence string
	// UseStateAfter asks for state_after (the state up to the end of the
	// timeline) instead of state (up to its start).
	UseStateAfter bool
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

// streams are the streams one request reads.
type streams struct {
	events, accountData, receipts, typing, toDevice *stream.Stream
	presence                                        *stream.Stream // nil without presence
	unread                                          *stream.Stream // nil without unread counts
}

func (s *Service) streamsFor(u id.UserID, d id.DeviceID) streams {
	return streams{
		events:      s.Rooms.Events,
		accountData: s.UserData.AccountDataStream(u),
		receipts:    s.Ephemeral.Receipts,
		typing:      s.Ephemeral.Typing,
		toDevice:    s.Ephemeral.ToDeviceStream(u, d),
		presence:    s.Presence,
		unread:      s.UnreadChanges,
	}
}

// counterKeys are the watched counters, in the order of kindOrder.
func (s *Service) counterKeys(st streams) ([]table.Key, []Kind) {
	keys := []table.Key{st.events.CounterKey(), st.accountData.CounterKey(), st.receipts.CounterKey(),
		st.typing.CounterKey(), st.toDevice.CounterKey()}
	kinds := []Kind{KindEvents, KindAccountData, KindReceipts, KindTyping, KindToDevice}
	if s.DeviceLists != nil && s.DeviceListCounter.PK != "" {
		keys = append(keys, s.DeviceListCounter)
		kinds = append(kinds, KindDeviceLists)
	}
	if st.presence != nil {
		keys = append(keys, st.presence.CounterKey())
		kinds = append(kinds, KindPresence)
	}
	if st.unread != nil {
		keys = append(keys, st.unread.CounterKey())
		kinds = append(kinds, KindUnread)
	}
	return keys, kinds
}

// signalKeys are the Notifier's signal items a waiting request of u polls
// (nil when the Notifier bumps none or the Waker cannot watch them).
func (s *Service) signalKeys(u id.UserID) []table.Key {
	if s.Notifier == nil || s.Notifier.Signals == nil {
		return nil
	}
	if _, ok := s.Waker.(SignalWaker); !ok {
		return nil
	}
	return []table.Key{SignalGlobal, SignalKey(u)}
}

// Sync answers one /sync request.
func (s *Service) Sync(ctx context.Context, req *Request) (*Response, error) {
	if req.Filter == nil {
		req.Filter = &filter.Filter{}
	}
	presence := req.SetPresence
	if presence == "" {
		presence = userdata.PresenceOnline
	}
	if err := s.UserData.TouchPresence(ctx, req.User, presence); err != nil {
		s.log().Warn("sync: recording presence", "user", req.User, "err", err)
	}
	st := s.streamsFor(req.User, req.Device)
	keys, kinds := s.counterKeys(st)
	var latest map[table.Key]int64
	var ws *WatchSet
	var ignored map[id.UserID]bool
	var sub *Subscription
	if req.Since != nil {
		// Subscribe before reading anything (the counters included), so a
		// write committed after our reads still wakes us.
		sub = s.Notifier.Subscribe(req.User, req.Device)
		defer sub.Close()
		var err error
		if latest, ws, ignored, err = s.sinceState(ctx, req, st, keys, kinds); err != nil {
			return nil, err
		}
	}
	// The since token acknowledges the to-device messages before it.
	var sinceTD int64
	if req.Since != nil {
		sinceTD = req.Since.ToDevice
	}
	tdStart, err := s.Ephemeral.AckToDevice(ctx, req.User, req.Device, sinceTD)
	if err != nil {
		return nil, err
	}

	r := &run{s: s, req: req, st: st, f: req.Filter, viewer: rooms.Viewer{UserID: req.User, Device: req.Device}}
	if req.Since == nil {
		if r.ignored, err = s.UserData.IgnoredUsers(ctx, req.User); err != nil {
			return nil, err
		}
		return r.initial(ctx, tdStart)
	}
	r.ignored = ignored

	w := newWindow(*req.Since, tdStart)
	r.w = w
	maxWait := s.MaxWait
	if maxWait <= 0 {
		maxWait = DefaultMaxWait
	}
	timeout := min(req.Timeout, maxWait)
	if req.FullState {
		timeout = 0
	}
	deadline := s.now().Add(timeout)
	// Only the streams whose counter is past the token have anything to
	// read (a counter equal to the token's position means nothing was
	// allocated after it, and the position itself was committed).
	var scan Kind
	heads := w.heads(kinds)
	for i, k := range keys {
		if latest[k] > heads[i] {
			scan |= kinds[i]
		}
	}
	if scan&KindTyping == 0 && timeout > 0 {
		// Not reading the typing stream, but a wait must still know when
		// a typing notice in the user's rooms expires.
		if err := r.expireTyping(ctx); err != nil {
			return nil, err
		}
	}
	for {
		if err := r.scan(ctx, scan); err != nil {
			return nil, err
		}
		if w.news() || req.FullState {
			resp, empty, err := r.build(ctx)
			if err != nil {
				return nil, err
			}
			if !empty || req.FullState || w.more {
				return resp, nil
			}
		}
		if w.more || !s.now().Before(deadline) {
			return r.emptyResponse(ctx), nil
		}
		next, err := r.wait(ctx, sub, deadline, keys, kinds, ws)
		if err != nil {
			return nil, err
		}
		scan = next
	}
}

// sinceState reads, for an incremental sync, the stream counters (which
// refuse a foreign token and say which streams have anything after it),
// the signal items a wait will poll (read before any stream is, so later
// writes move them) and the user's ignore list, all in one GetMany. A
// token from before the unread stream is given that stream's head.
func (s *Service) sinceState(ctx context.Context, req *Request, st streams, keys []table.Key, kinds []Kind) (map[table.Key]int64, *WatchSet, map[id.UserID]bool, error) {
	var signals []table.Key
	if req.Timeout > 0 && !req.FullState { // only a wait polls them
		signals = s.signalKeys(req.User)
	}
	ignoredKey := userdata.AccountDataKey(req.User, "", userdata.TypeIgnoredList)
	latest, seen, ignoredItem, err := s.checkToken(ctx, *req.Since, keys, kinds, signals, ignoredKey)
	if err != nil {
		return nil, nil, nil, err
	}
	ignored := map[id.UserID]bool{}
	if ignoredItem != nil {
		var ad userdata.AccountData
		if err := json.Unmarshal(ignoredItem.Data, &ad); err != nil {
			return nil, nil, nil, err
		}
		ignored = userdata.ParseIgnored(ad.Content)
	}
	var ws *WatchSet
	if signals != nil {
		// The global signal moves with the server-wide streams, the
		// user's with their account data and to-device inboxes.
		sc := make([][]int, 2)
		for i, k := range kinds {
			if SignalOfUser(k) {
				sc[1] = append(sc[1], i)
			} else {
				sc[0] = append(sc[0], i)
			}
		}
		ws = &WatchSet{Counters: keys, Signals: signals, Seen: seen, SignalCounters: sc}
	}
	if req.Since.NoUnread {
		since := *req.Since
		since.NoUnread = false
		if st.unread != nil {
			if since.Unread, err = s.head(ctx, st.unread); err != nil {
				return nil, nil, nil, err
			}
			latest[st.unread.CounterKey()] = since.Unread
		}
		req.Since = &since
	}
	return latest, ws, ignored, nil
}

// checkToken refuses positions that are past what the streams have
// allocated (a made-up or foreign token).
// It returns the counters' values, and those of the signal items (read in
// the same GetMany).
//
// The same read fetches the item at extra (nil if it does not exist).
func (s *Service) checkToken(ctx context.Context, t Token, keys []table.Key, kinds []Kind, signals []table.Key, extra table.Key) (map[table.Key]int64, []int64, *table.Item, error) {
	all := append(append(keys[:len(keys):len(keys)], signals...), extra)
	items, err := s.T.GetMany(ctx, all)
	if err != nil {
		return nil, nil, nil, err
	}
	latest := map[table.Key]int64{}
	var found *table.Item
	for i, it := range items {
		if it.Key() == extra {
			found = &items[i]
			continue
		}
		latest[it.Key()] = it.Num
	}
	seen := make([]int64, len(signals))
	for i, k := range signals {
		seen[i] = latest[k]
	}
	for i, k := range keys {
		var pos int64
		switch kinds[i] {
		case KindEvents:
			pos = t.Events
		case KindAccountData:
			pos = t.AccountData
		case KindReceipts:
			pos = t.Receipts
		case KindTyping:
			pos = t.Typing
		case KindToDevice:
			pos = t.ToDevice
		case KindDeviceLists:
			pos = t.DeviceLists
		case KindPresence:
			pos = t.Presence
		case KindUnread:
			pos = t.Unread
		}
		if pos > latest[k] {
			return nil, nil, nil, httpapi.InvalidParam("since token is not one this server issued")
		}
	}
	return latest, seen, found, nil
}

// wait blocks until something may have changed, the deadline passes or a
// typing notice in one of the user's rooms is due to expire. It returns the
// streams to read again.
func (r *run) wait(ctx context.Context, sub *Subscription, deadline time.Time, keys []table.Key, kinds []Kind, ws *WatchSet) (Kind, error) {
	if k := sub.Take(); k != 0 {
		return k, nil
	}
	until := deadline
	if r.w.typingDue != nil && r.w.typingDue.Before(until) {
		until = *r.w.typingDue
	}
	wctx, cancel := context.WithDeadline(ctx, until)
	defer cancel()
	polled := make(chan []int, 1)
	if r.s.Waker != nil {
		heads := r.w.heads(kinds)
		done := make(chan struct{})
		// The watcher may update ws: it must have stopped before the next
		// wait starts another.
		defer func() { cancel(); <-done }()
		go func() {
			defer close(done)
			var moved []int
			var err error
			if sw, ok := r.s.Waker.(SignalWaker); ok && ws != nil {
				ws.Heads = heads
				moved, err = sw.WatchSignals(wctx, ws)
			} else {
				moved, err = r.s.Waker.Watch(wctx, keys, heads)
			}
			if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				r.s.log().Warn("sync: watching stream counters", "err", err)
			}
			if moved != nil {
				polled <- moved
			}
		}()
	}
	select {
	case <-sub.C:
		return sub.Take(), nil
	case moved := <-polled:
		var k Kind
		for _, i := range moved {
			k |= kinds[i]
		}
		return k | sub.Take(), nil
	case <-wctx.Done():
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if r.w.typingDue != nil && !r.s.now().Before(*r.w.typingDue) {
			return KindTyping, nil // expire due typing notices, then read again
		}
		return sub.Take(), nil
	}
}
