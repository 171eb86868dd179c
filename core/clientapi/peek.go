package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/clientsync"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// peekPageSize caps the events one GET /events answer carries.
const peekPageSize = 100

// PeekAPI serves GET /_matrix/client/v3/events?room_id=: long-polling the
// new events of one room, which the caller is joined to or which is world
// readable (spec "Peeking"; guests may peek too). Its tokens are the
// room's timeline positions ("tN"), the same as /messages and room
// initialSync use, so a client can start from either.
type PeekAPI struct {
	Rooms    *rooms.Service
	RoomsAPI *RoomsAPI
	// Notifier wakes waiters on this process's writes; Waker, if set,
	// watches the events stream's counter for other processes' writes
	// (the /sync service's, core/clientsync).
	Notifier *clientsync.Notifier
	Waker    clientsync.Waker
	// MaxWait caps the timeout a client asks for.
	MaxWait time.Duration
	Now     func() time.Time
}

func (a *PeekAPI) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// mayPeek answers 403 unless u is joined to the room or the room is world
// readable now. An unknown room is 403 too (nothing is revealed).
func (a *PeekAPI) mayPeek(ctx context.Context, room id.RoomID, u id.UserID) error {
	m, err := a.Rooms.Membership(ctx, room, u)
	if err != nil {
		return err
	}
	if m == "join" {
		return nil
	}
	hv, err := a.Rooms.CurrentStateEvent(ctx, room, "m.room.history_visibility", "")
	if errors.Is(err, rooms.ErrNoRoom) {
		return httpapi.Forbidden("you may not peek into this room")
	}
	if err != nil {
		return err
	}
	if hv != nil {
		var c struct {
			V string `json:"history_visibility"`
		}
		if json.Unmarshal(hv.Content, &c) == nil && c.V == "world_readable" {
			return nil
		}
	}
	return httpapi.Forbidden("you may not peek into this room: it is not world readable and you are not joined")
}

// Events serves GET /_matrix/client/v3/events (the peeking form, room_id
// required). Without from it waits for events after the newest one.
func (a *PeekAPI) Events(r *httpapi.Request) (any, error) {
	q := r.URL.Query()
	rs := q.Get("room_id")
	if rs == "" {
		return nil, httpapi.MissingParam("room_id is required")
	}
	if !validRoomID(rs) {
		return nil, httpapi.InvalidParam("invalid room ID %q", rs)
	}
	room := id.RoomID(rs)
	timeoutMS, err := r.QueryInt("timeout", 0, 0, 1<<31)
	if err != nil {
		return nil, err
	}
	ctx := r.Ctx()
	if err := a.mayPeek(ctx, room, r.Caller.UserID); err != nil {
		return nil, err
	}
	var from int64
	if fs := q.Get("from"); fs != "" {
		if from, err = parseToken(fs); err != nil {
			return nil, err
		}
	} else if from, err = a.Rooms.LatestSeq(ctx, room); err != nil {
		return nil, err
	}
	maxWait := a.MaxWait
	if maxWait <= 0 {
		maxWait = clientsync.DefaultMaxWait
	}
	deadline := a.now().Add(min(time.Duration(timeoutMS)*time.Millisecond, maxWait))

	// Subscribe before reading, so an event persisted between the read and
	// the wait still wakes this request.
	sub := a.Notifier.Subscribe(r.Caller.UserID, r.Caller.DeviceID)
	defer sub.Close()
	start, cursor := from, from
	for {
		var head int64
		if a.Waker != nil {
			if head, err = a.Rooms.Events.Latest(ctx); err != nil {
				return nil, err
			}
		}
		page, err := a.Rooms.Timeline(ctx, room, rooms.Forward, cursor, 0, peekPageSize)
		if err != nil {
			return nil, err
		}
		if n := len(page.Events); n > 0 {
			cursor = page.Events[n-1].Seq
			chunk, err := a.visible(ctx, r, page.Events)
			if err != nil {
				return nil, err
			}
			if len(chunk) > 0 {
				return a.answer(r, chunk, start, cursor)
			}
			continue // nothing the caller may see: read on
		}
		wait := deadline.Sub(a.now())
		if wait <= 0 {
			return a.answer(r, nil, start, cursor)
		}
		if err := a.wait(ctx, sub, wait, head); err != nil {
			return nil, err
		}
	}
}

// visible keeps the events the caller may see (history visibility at each
// event) from senders they do not ignore.
func (a *PeekAPI) visible(ctx context.Context, r *httpapi.Request, evs []*rooms.Event) ([]*rooms.Event, error) {
	vis, err := a.Rooms.CanSee(ctx, r.Caller.UserID, evs)
	if err != nil {
		return nil, err
	}
	ignored, err := a.RoomsAPI.ignoredBy(ctx, r.Caller.UserID)
	if err != nil {
		return nil, err
	}
	out := vis[:0:0]
	for _, ev := range vis {
		if ev.IsState() || !ignored[ev.Sender] {
			out = append(out, ev)
		}
	}
	return out, nil
}

func (a *PeekAPI) answer(r *httpapi.Request, chunk []*rooms.Event, start, end int64) (any, error) {
	out, err := a.Rooms.Format(r.Ctx(), chunk, viewer(r))
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = []rooms.ClientEvent{}
	}
	return map[string]any{"chunk": out, "start": formatToken(start), "end": formatToken(end)}, nil
}

// wait returns when this process persists an event, when another process
// moves the events stream past head (with a Waker), or after d.
func (a *PeekAPI) wait(ctx context.Context, sub *clientsync.Subscription, d time.Duration, head int64) error {
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	polled := make(chan struct{})
	if a.Waker != nil {
		go func() {
			if moved, _ := a.Waker.Watch(wctx, []table.Key{a.Rooms.Events.CounterKey()}, []int64{head}); len(moved) > 0 {
				close(polled)
			}
		}()
	}
	for {
		select {
		case <-sub.C:
			if sub.Take()&clientsync.KindEvents != 0 {
				return nil
			}
		case <-polled:
			return nil
		case <-wctx.Done():
			return ctx.Err() // nil when only the wait ran out
		}
	}
}
