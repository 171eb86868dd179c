package ephemeral

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Typing timeouts.
const (
	DefaultTypingTimeout = 30 * time.Second
	MaxTypingTimeout     = 2 * time.Minute
	// typingLinger keeps an expired typing item readable for a while, so the
	// reader that notices the expiry can remove it with a version check and
	// record the change in the stream (the table hides items past their TTL).
	typingLinger = 10 * time.Minute
)

// Typing items share one partition, so one query lists every typing user on
// the server (the /sync waiters use it to know when the next expiry is due):
//
//	typing / <room>\x1f<user>   d = TypingItem, v = version, ttl = expiry + 10 min
const typingPK = "typing"

func typingKey(r id.RoomID, u id.UserID) table.Key {
	return table.Key{PK: typingPK, SK: string(r) + "\x1f" + string(u)}
}

// TypingItem is one user typing in one room.
type TypingItem struct {
	RoomID  id.RoomID `json:"room_id"`
	UserID  id.UserID `json:"user_id"`
	Expires int64     `json:"expires"` // Unix ms
	version int64
}

// TypingEntry is the typing stream's entry: this room's list changed.
type TypingEntry struct {
	RoomID id.RoomID `json:"room_id"`
}

func decodeTyping(it table.Item) (TypingItem, error) {
	var ti TypingItem
	err := json.Unmarshal(it.Data, &ti)
	ti.version = it.Version
	return ti, err
}

// SetTyping marks u as typing in r for timeout, or as not typing. The typing
// stream gets an entry only when the room's list changes (a refresh of an
// unexpired typing notice just moves its expiry).
func (s *Service) SetTyping(ctx context.Context, r id.RoomID, u id.UserID, typing bool, timeout time.Duration) error {
	k := typingKey(r, u)
	entry, _ := json.Marshal(TypingEntry{RoomID: r})
	for attempt := 0; attempt < 20; attempt++ {
		now := s.Now()
		var cur *TypingItem
		it, err := s.T.Get(ctx, k)
		switch {
		case errors.Is(err, table.ErrNotFound):
		case err != nil:
			return err
		default:
			ti, err := decodeTyping(it)
			if err != nil {
				return err
			}
			cur = &ti
		}
		cond := table.IfNotExists()
		var version int64
		if cur != nil {
			cond, version = table.IfVersion(cur.version), cur.version
		}
		if !typing {
			if cur == nil {
				return nil
			}
			_, err = s.Typing.Append(ctx, func(int64) ([]byte, []table.Op, error) {
				return entry, []table.Op{table.Delete(k, cond)}, nil
			})
		} else {
			exp := now.Add(timeout)
			d, _ := json.Marshal(TypingItem{RoomID: r, UserID: u, Expires: exp.UnixMilli()})
			item := table.Item{PK: k.PK, SK: k.SK, Data: d, Version: version + 1, TTL: exp.Add(typingLinger).Unix()}
			if cur != nil && cur.Expires > now.UnixMilli() {
				// Still typing: only the expiry moves; the list is unchanged.
				err = s.T.Put(ctx, item, cond)
				if errors.Is(err, table.ErrConditionFailed) {
					continue
				}
				if err == nil {
					s.localTyping(ctx, r, u, true, timeout)
				}
				return err
			}
			_, err = s.Typing.Append(ctx, func(int64) ([]byte, []table.Op, error) {
				return entry, []table.Op{table.Put(item, cond)}, nil
			})
		}
		var txe *table.TxError
		if errors.As(err, &txe) {
			continue
		}
		if err != nil {
			return err
		}
		s.notify(s.Typing.Name)
		s.localTyping(ctx, r, u, typing, timeout)
		s.typingChanged(ctx, r)
		return nil
	}
	return httpapi.LimitExceeded(100).With("error", "typing state is changing too fast")
}

// AllTyping lists every typing item on the server, expired ones included
// (until someone calls Expire on them).
func (s *Service) AllTyping(ctx context.Context) ([]TypingItem, error) {
	return s.queryTyping(ctx, table.Query{PK: typingPK})
}

func (s *Service) queryTyping(ctx context.Context, q table.Query) ([]TypingItem, error) {
	var out []TypingItem
	for {
		page, err := s.T.Query(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, it := range page.Items {
			ti, err := decodeTyping(it)
			if err != nil {
				return nil, err
			}
			out = append(out, ti)
		}
		if page.Next == "" {
			return out, nil
		}
		q.Cursor = page.Next
	}
}

// TypingUsers returns who is typing in r now, sorted.
func (s *Service) TypingUsers(ctx context.Context, r id.RoomID) ([]id.UserID, error) {
	items, err := s.queryTyping(ctx, table.Query{PK: typingPK, Prefix: string(r) + "\x1f"})
	if err != nil {
		return nil, err
	}
	return ActiveUsers(items, r, s.Now()), nil
}

// ActiveUsers picks the unexpired typing users of room r from items, sorted.
func ActiveUsers(items []TypingItem, r id.RoomID, now time.Time) []id.UserID {
	out := []id.UserID{}
	for _, ti := range items {
		if ti.RoomID == r && ti.Expires > now.UnixMilli() {
			out = append(out, ti.UserID)
		}
	}
	sort.Slice(out, func(i, j int) bool { return strings.Compare(string(out[i]), string(out[j])) < 0 })
	return out
}

// Expire removes a typing item whose time has passed and records the change
// in the typing stream. Many readers may try at once: the version check lets
// exactly one of them (or a refresh by the typist) win; the rest do nothing.
func (s *Service) Expire(ctx context.Context, ti TypingItem) error {
	if ti.Expires > s.Now().UnixMilli() {
		return nil
	}
	k := typingKey(ti.RoomID, ti.UserID)
	// Most losers find the item already gone or changed: a read is cheaper
	// than an allocation that would only be voided.
	it, err := s.T.Get(ctx, k)
	if errors.Is(err, table.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if it.Version != ti.version {
		return nil
	}
	entry, _ := json.Marshal(TypingEntry{RoomID: ti.RoomID})
	_, err = s.Typing.Append(ctx, func(int64) ([]byte, []table.Op, error) {
		return entry, []table.Op{table.Delete(k, table.IfVersion(ti.version))}, nil
	})
	var txe *table.TxError
	if errors.As(err, &txe) {
		return nil
	}
	if err == nil {
		s.notify(s.Typing.Name)
		s.typingChanged(ctx, ti.RoomID)
		s.localTyping(ctx, ti.RoomID, ti.UserID, false, 0)
	}
	return err
}

// typingChanged reports a change of a room's typing list to OnTypingChanged.
func (s *Service) typingChanged(ctx context.Context, r id.RoomID) {
	if s.OnTypingChanged != nil {
		s.OnTypingChanged(ctx, r)
	}
}

// ExpireDue expires those of items (AllTyping's) in rooms for which in
// answers true whose time has passed, as the reader that notices does (see
// Expire), and returns when the next of them is due (nil: none): a little
// after its expiry, so the typist's own refresh usually wins.
func (s *Service) ExpireDue(ctx context.Context, items []TypingItem, in func(id.RoomID) bool) (*time.Time, error) {
	now := s.Now()
	var due *time.Time
	for _, ti := range items {
		if !in(ti.RoomID) {
			continue
		}
		exp := time.UnixMilli(ti.Expires)
		if !exp.After(now) {
			if err := s.Expire(ctx, ti); err != nil && !errors.Is(err, table.ErrConflict) {
				return nil, err
			}
			continue
		}
		if d := exp.Add(100 * time.Millisecond); due == nil || d.Before(*due) {
			due = &d
		}
	}
	return due, nil
}
