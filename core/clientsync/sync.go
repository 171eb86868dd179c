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
}

func (s *Service) streamsFor(u id.UserID, d id.DeviceID) streams {
	return streams{
		events:      s.Rooms.Events,
		accountData: s.UserData.AccountDataStream(u),
		receipts:    s.Ephemeral.Receipts,
		typing:      s.Ephemeral.Typing,
		toDevice:    s.Ephemeral.ToDeviceStream(u, d),
		presence:    s.Presence,
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
	return keys, kinds
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
	if req.Since != nil {
		if err := s.checkToken(ctx, *req.Since, keys, kinds); err != nil {
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
	if r.ignored, err = s.UserData.IgnoredUsers(ctx, req.User); err != nil {
		return nil, err
	}
	if req.Since == nil {
		return r.initial(ctx, tdStart)
	}

	// Subscribe before reading, so a write between our read and our wait
	// still wakes us.
	sub := s.Notifier.Subscribe(req.User, req.Device)
	defer sub.Close()
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
	scan := KindAll
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
		next, err := r.wait(ctx, sub, deadline, keys, kinds)
		if err != nil {
			return nil, err
		}
		scan = next
	}
}

// checkToken refuses positions that are past what the streams have
// allocated (a made-up or foreign token).
func (s *Service) checkToken(ctx context.Context, t Token, keys []table.Key, kinds []Kind) error {
	items, err := s.T.GetMany(ctx, keys)
	if err != nil {
		return err
	}
	latest := map[table.Key]int64{}
	for _, it := range items {
		latest[it.Key()] = it.Num
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
		}
		if pos > latest[k] {
			return httpapi.InvalidParam("since token is not one this server issued")
		}
	}
	return nil
}

// wait blocks until something may have changed, the deadline passes or a
// typing notice in one of the user's rooms is due to expire. It returns the
// streams to read again.
func (r *run) wait(ctx context.Context, sub *Subscription, deadline time.Time, keys []table.Key, kinds []Kind) (Kind, error) {
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
		go func() {
			moved, err := r.s.Waker.Watch(wctx, keys, heads)
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
