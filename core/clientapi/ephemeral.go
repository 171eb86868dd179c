package clientapi

import (
	"encoding/json"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/ephemeral"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/userdata"
)

// mustBeJoined answers 403 unless the caller is joined to the room.
func (a *UserDataAPI) mustBeJoined(r *httpapi.Request, room id.RoomID) error {
	m, err := a.Rooms.Membership(r.Ctx(), room, r.Caller.UserID)
	if err != nil {
		return err
	}
	if m != "join" {
		return httpapi.Forbidden("you are not joined to this room")
	}
	return nil
}

// ---- typing ----

// PutTyping serves PUT /rooms/{roomId}/typing/{userId}.
func (a *UserDataAPI) PutTyping(r *httpapi.Request) (any, error) {
	room, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	u, err := selfParam(r, "set typing notifications")
	if err != nil {
		return nil, err
	}
	var body struct {
		Typing  *bool  `json:"typing"`
		Timeout *int64 `json:"timeout"`
	}
	if err := r.DecodeJSON(&body); err != nil {
		return nil, err
	}
	if body.Typing == nil {
		return nil, httpapi.BadJSON("typing (a boolean) is required")
	}
	timeout := ephemeral.DefaultTypingTimeout
	if body.Timeout != nil {
		if *body.Timeout < 0 {
			return nil, httpapi.InvalidParam("timeout must not be negative")
		}
		timeout = min(time.Duration(*body.Timeout)*time.Millisecond, ephemeral.MaxTypingTimeout)
	}
	if err := a.mustBeJoined(r, room); err != nil {
		return nil, err
	}
	if err := a.Ephemeral.SetTyping(r.Ctx(), room, u, *body.Typing, timeout); err != nil {
		return nil, err
	}
	return httpapi.Empty{}, nil
}

// ---- receipts and read markers ----

// roomEvent loads an event the caller names in a room (404 if it is not
// there, 400 if it is not an event id).
func (a *UserDataAPI) roomEvent(r *httpapi.Request, room id.RoomID, e id.EventID) (*rooms.Event, error) {
	if !strings.HasPrefix(string(e), "$") || len(e) > 255 {
		return nil, httpapi.InvalidParam("invalid event ID %q", e)
	}
	ev, err := a.Rooms.Event(r.Ctx(), e)
	if err != nil || ev.RoomID != room {
		return nil, httpapi.NotFound("event %s is not in this room", e)
	}
	return ev, nil
}

// PostReceipt serves POST /rooms/{roomId}/receipt/{receiptType}/{eventId}.
func (a *UserDataAPI) PostReceipt(r *httpapi.Request) (any, error) {
	room, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	typ := r.PathValue("receiptType")
	switch typ {
	case ephemeral.ReceiptRead, ephemeral.ReceiptReadPrivate, userdata.TypeFullyRead:
	default:
		return nil, httpapi.InvalidParam("receipt type must be m.read, m.read.private or m.fully_read")
	}
	e := id.EventID(r.PathValue("eventId"))
	if !strings.HasPrefix(string(e), "$") || len(e) > 255 {
		return nil, httpapi.InvalidParam("invalid event ID %q", e)
	}
	var body map[string]json.RawMessage
	if err := r.DecodeOptionalJSON(&body); err != nil {
		return nil, err
	}
	thread := ""
	if raw, ok := body["thread_id"]; ok {
		if err := json.Unmarshal(raw, &thread); err != nil || thread == "" {
			return nil, httpapi.InvalidParam("thread_id must be a non-empty string")
		}
		if typ == userdata.TypeFullyRead {
			return nil, httpapi.InvalidParam("thread_id is not allowed for m.fully_read")
		}
		if !ephemeral.ValidThreadID(thread) {
			return nil, httpapi.InvalidParam("thread_id must be main or an event ID")
		}
	}
	if err := a.mustBeJoined(r, room); err != nil {
		return nil, err
	}
	ev, err := a.roomEvent(r, room, e)
	if err != nil {
		return nil, err
	}
	if typ == userdata.TypeFullyRead {
		err = a.setFullyRead(r, room, ev)
	} else {
		err = a.Ephemeral.PutReceipt(r.Ctx(), room, r.Caller.UserID, typ, thread, ev.EventID, ev.Seq)
	}
	if err != nil {
		return nil, err
	}
	return httpapi.Empty{}, nil
}

// setFullyRead moves the m.fully_read marker forward to ev (a marker for
// an earlier event is accepted and ignored).
func (a *UserDataAPI) setFullyRead(r *httpapi.Request, room id.RoomID, ev *rooms.Event) error {
	ctx := r.Ctx()
	return a.UserData.Update(ctx, r.Caller.UserID, room, userdata.TypeFullyRead, func(old json.RawMessage) (json.RawMessage, error) {
		var cur struct {
			EventID id.EventID `json:"event_id"`
		}
		if json.Unmarshal(old, &cur) == nil && cur.EventID != "" {
			if prev, err := a.Rooms.Event(ctx, cur.EventID); err == nil && prev.RoomID == room && prev.Seq >= ev.Seq {
				return nil, userdata.ErrUnchanged
			}
		}
		return json.Marshal(map[string]id.EventID{"event_id": ev.EventID})
	})
}

// PostReadMarkers serves POST /rooms/{roomId}/read_markers.
func (a *UserDataAPI) PostReadMarkers(r *httpapi.Request) (any, error) {
	room, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	var body map[string]json.RawMessage
	if err := r.DecodeJSON(&body); err != nil {
		return nil, err
	}
	marks := map[string]id.EventID{}
	for _, k := range []string{userdata.TypeFullyRead, ephemeral.ReceiptRead, ephemeral.ReceiptReadPrivate} {
		raw, ok := body[k]
		if !ok || string(raw) == "null" {
			continue
		}
		var e string
		if err := json.Unmarshal(raw, &e); err != nil {
			return nil, httpapi.BadJSON("%s must be an event ID", k)
		}
		if !strings.HasPrefix(e, "$") || len(e) > 255 {
			return nil, httpapi.InvalidParam("%s: invalid event ID %q", k, e)
		}
		marks[k] = id.EventID(e)
	}
	if err := a.mustBeJoined(r, room); err != nil {
		return nil, err
	}
	evs := map[string]*rooms.Event{}
	for k, e := range marks {
		if evs[k], err = a.roomEvent(r, room, e); err != nil {
			return nil, err
		}
	}
	for _, typ := range []string{ephemeral.ReceiptRead, ephemeral.ReceiptReadPrivate} {
		if ev := evs[typ]; ev != nil {
			if err := a.Ephemeral.PutReceipt(r.Ctx(), room, r.Caller.UserID, typ, "", ev.EventID, ev.Seq); err != nil {
				return nil, err
			}
		}
	}
	if ev := evs[userdata.TypeFullyRead]; ev != nil {
		if err := a.setFullyRead(r, room, ev); err != nil {
			return nil, err
		}
	}
	return httpapi.Empty{}, nil
}

// ---- send-to-device ----

// PutSendToDevice serves PUT /sendToDevice/{eventType}/{txnId}.
func (a *UserDataAPI) PutSendToDevice(r *httpapi.Request) (any, error) {
	typ, txn := r.PathValue("eventType"), r.PathValue("txnId")
	if !validEventType(typ) {
		return nil, httpapi.InvalidParam("invalid event type")
	}
	if txn == "" || len(txn) > 255 {
		return nil, httpapi.InvalidParam("invalid transaction id")
	}
	var body struct {
		Messages *map[id.UserID]map[id.DeviceID]json.RawMessage `json:"messages"`
	}
	if err := r.DecodeJSON(&body); err != nil {
		return nil, err
	}
	if body.Messages == nil {
		return nil, httpapi.BadJSON("messages is required")
	}
	for u, byDevice := range *body.Messages {
		if !validUserID(u) {
			return nil, httpapi.InvalidParam("%q is not a user ID", u)
		}
		for d, c := range byDevice {
			if d == "" || len(d) > 255 {
				return nil, httpapi.InvalidParam("invalid device ID %q", d)
			}
			if len(c) == 0 || c[0] != '{' {
				return nil, httpapi.BadJSON("the message for %s %s must be a JSON object", u, d)
			}
			if len(c) > userdata.MaxContentBytes {
				return nil, httpapi.TooLarge("the message for %s %s is too large", u, d)
			}
		}
	}
	if err := a.Ephemeral.SendToDevice(r.Ctx(), r.Caller.UserID, r.Caller.DeviceID, txn, typ, *body.Messages); err != nil {
		return nil, err
	}
	return httpapi.Empty{}, nil
}
