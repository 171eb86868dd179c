// Package userdata keeps what a user stores about themselves on the server:
// account data (global and per room, including room tags, the fully-read
// marker and the ignored-user list), sync filters and presence.
//
// Every account data change is appended to the user's own account data
// stream (core/stream) in the same transaction that writes the value, so
// /sync can ask "what changed after position P" without scanning anything
// but this user's changes, and without ever missing one.
package userdata

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/stream"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Well-known account data types.
const (
	TypeTags        = "m.tag"
	TypeFullyRead   = "m.fully_read"
	TypePushRules   = "m.push_rules"
	TypeIgnoredList = "m.ignored_user_list"
)

// MaxContentBytes bounds one account data value (well under the item limit).
const MaxContentBytes = 256 * 1024

// Service is the user data store.
type Service struct {
	T   table.Table
	Now func() time.Time
	// Notify, if set, is called after a change is committed to the stream
	// with the given name (wakes /sync waiters in this process).
	Notify func(stream string)
	// OnPresence, if set, is called after a user's presence changed: a
	// local user's state or status message (not a mere refresh of
	// last_active), or any update received from a remote user's server
	// (presence_remote.go). The presence stream of /sync and the federation
	// EDU (local users only) hang on it.
	OnPresence func(ctx context.Context, u id.UserID)
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Service) notify(name string) {
	if s.Notify != nil {
		s.Notify(name)
	}
}

// Key layout (ARCHITECTURE.md, "Key schema").
func userPK(u id.UserID) string { return "user#" + string(u) }

// AccountDataKey is the table key of one account data value (so a caller
// can read it together with other items; its Data is an AccountData).
func AccountDataKey(u id.UserID, room id.RoomID, typ string) table.Key { return adKey(u, room, typ) }
func adKey(u id.UserID, room id.RoomID, typ string) table.Key {
	r := string(room)
	if r == "" {
		r = "_"
	}
	return table.Key{PK: userPK(u), SK: "ad#" + r + "#" + typ}
}
func filterKey(u id.UserID, fid string) table.Key {
	return table.Key{PK: userPK(u), SK: "filter#" + fid}
}

// StreamPrefix is the name prefix of the per-user account data streams.
const StreamPrefix = "accountdata#"

// AccountDataStream is the user's account data stream: one entry (an
// AccountDataRef) per change.
func (s *Service) AccountDataStream(u id.UserID) *stream.Stream {
	return &stream.Stream{T: s.T, Name: StreamPrefix + string(u), Now: s.Now}
}

// AccountDataRef names one account data value: a type, global (RoomID
// empty) or for one room. It is also the stream entry of a change.
type AccountDataRef struct {
	RoomID id.RoomID `json:"room_id,omitempty"`
	Type   string    `json:"type"`
}

// AccountData is one stored value.
type AccountData struct {
	AccountDataRef
	Content json.RawMessage `json:"content"`
}

// Get returns one account data value (nil if unset).
func (s *Service) Get(ctx context.Context, u id.UserID, room id.RoomID, typ string) (json.RawMessage, error) {
	it, err := s.T.Get(ctx, adKey(u, room, typ))
	if errors.Is(err, table.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ad AccountData
	if err := json.Unmarshal(it.Data, &ad); err != nil {
		return nil, err
	}
	return ad.Content, nil
}

// GetMany returns the current values of the refs that are set.
func (s *Service) GetMany(ctx context.Context, u id.UserID, refs []AccountDataRef) ([]AccountData, error) {
	keys := make([]table.Key, len(refs))
	for i, r := range refs {
		keys[i] = adKey(u, r.RoomID, r.Type)
	}
	items, err := s.T.GetMany(ctx, keys)
	if err != nil {
		return nil, err
	}
	out := make([]AccountData, 0, len(items))
	for _, it := range items {
		var ad AccountData
		if err := json.Unmarshal(it.Data, &ad); err != nil {
			return nil, err
		}
		out = append(out, ad)
	}
	return out, nil
}

// All returns every account data value of the user (global and per room).
func (s *Service) All(ctx context.Context, u id.UserID) ([]AccountData, error) {
	q := table.Query{PK: userPK(u), Prefix: "ad#"}
	var out []AccountData
	for {
		page, err := s.T.Query(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, it := range page.Items {
			var ad AccountData
			if err := json.Unmarshal(it.Data, &ad); err != nil {
				return nil, err
			}
			out = append(out, ad)
		}
		if page.Next == "" {
			return out, nil
		}
		q.Cursor = page.Next
	}
}

// Set stores an account data value (a JSON object). Server-managed types
// are refused by the HTTP layer, not here: the server itself writes them.
func (s *Service) Set(ctx context.Context, u id.UserID, room id.RoomID, typ string, content json.RawMessage) error {
	return s.update(ctx, u, room, typ, func(json.RawMessage) (json.RawMessage, error) { return content, nil }, false)
}

// Update changes one value with read-modify-write: change gets the current
// content (nil if unset) and returns the new one. Concurrent updates of the
// same value are serialised with a version check and retried.
func (s *Service) Update(ctx context.Context, u id.UserID, room id.RoomID, typ string, change func(old json.RawMessage) (json.RawMessage, error)) error {
	return s.update(ctx, u, room, typ, change, true)
}

// ErrUnchanged lets an Update change function say there is nothing to write.
var ErrUnchanged = errors.New("userdata: unchanged")

func (s *Service) update(ctx context.Context, u id.UserID, room id.RoomID, typ string, change func(json.RawMessage) (json.RawMessage, error), guarded bool) error {
	k := adKey(u, room, typ)
	st := s.AccountDataStream(u)
	for attempt := 0; attempt < 20; attempt++ {
		var old json.RawMessage
		var version int64
		cond := table.Cond{}
		if guarded {
			it, err := s.T.Get(ctx, k)
			switch {
			case errors.Is(err, table.ErrNotFound):
				cond = table.IfNotExists()
			case err != nil:
				return err
			default:
				var ad AccountData
				if err := json.Unmarshal(it.Data, &ad); err != nil {
					return err
				}
				old, version, cond = ad.Content, it.Version, table.IfVersion(it.Version)
			}
		}
		content, err := change(old)
		if errors.Is(err, ErrUnchanged) {
			return nil
		}
		if err != nil {
			return err
		}
		if len(content) > MaxContentBytes {
			return httpapi.TooLarge("account data is over %d bytes", MaxContentBytes)
		}
		ref := AccountDataRef{RoomID: room, Type: typ}
		data, _ := json.Marshal(AccountData{AccountDataRef: ref, Content: content})
		entry, _ := json.Marshal(ref)
		_, err = st.Append(ctx, func(pos int64) ([]byte, []table.Op, error) {
			return entry, []table.Op{table.Put(table.Item{PK: k.PK, SK: k.SK, Data: data, Num: pos, Version: version + 1}, cond)}, nil
		})
		var txe *table.TxError
		if errors.As(err, &txe) {
			continue // someone else changed the value first: read it again
		}
		if err != nil {
			return err
		}
		s.notify(st.Name)
		return nil
	}
	return httpapi.LimitExceeded(100).With("error", "account data is changing too fast, try again")
}

// Tags returns a room's tags (m.tag content's "tags"), never nil.
func (s *Service) Tags(ctx context.Context, u id.UserID, room id.RoomID) (map[string]json.RawMessage, error) {
	c, err := s.Get(ctx, u, room, TypeTags)
	if err != nil {
		return nil, err
	}
	return parseTags(c), nil
}

func parseTags(c json.RawMessage) map[string]json.RawMessage {
	var t struct {
		Tags map[string]json.RawMessage `json:"tags"`
	}
	_ = json.Unmarshal(c, &t)
	if t.Tags == nil {
		t.Tags = map[string]json.RawMessage{}
	}
	return t.Tags
}

// SetTag adds or replaces one tag (info is the tag's object, e.g. {"order":0.5}).
func (s *Service) SetTag(ctx context.Context, u id.UserID, room id.RoomID, tag string, info json.RawMessage) error {
	return s.Update(ctx, u, room, TypeTags, func(old json.RawMessage) (json.RawMessage, error) {
		tags := parseTags(old)
		tags[tag] = info
		return json.Marshal(map[string]any{"tags": tags})
	})
}

// DeleteTag removes a tag (nothing happens if it is not set).
func (s *Service) DeleteTag(ctx context.Context, u id.UserID, room id.RoomID, tag string) error {
	return s.Update(ctx, u, room, TypeTags, func(old json.RawMessage) (json.RawMessage, error) {
		tags := parseTags(old)
		if _, ok := tags[tag]; !ok {
			return nil, ErrUnchanged
		}
		delete(tags, tag)
		return json.Marshal(map[string]any{"tags": tags})
	})
}

// IgnoredUsers returns the users in the m.ignored_user_list account data.
func (s *Service) IgnoredUsers(ctx context.Context, u id.UserID) (map[id.UserID]bool, error) {
	c, err := s.Get(ctx, u, "", TypeIgnoredList)
	if err != nil || c == nil {
		return nil, err
	}
	return ParseIgnored(c), nil
}

// ParseIgnored reads the users of m.ignored_user_list content.
func ParseIgnored(c json.RawMessage) map[id.UserID]bool {
	var l struct {
		Ignored map[id.UserID]json.RawMessage `json:"ignored_users"`
	}
	_ = json.Unmarshal(c, &l)
	out := make(map[id.UserID]bool, len(l.Ignored))
	for u := range l.Ignored {
		out[u] = true
	}
	return out
}

// ---- filters ----

// MaxFilterBytes bounds a stored filter.
const MaxFilterBytes = 64 * 1024

// PutFilter stores a (validated, compacted) filter and returns its id. The
// id is derived from the filter's bytes, so uploading the same filter twice
// gives the same id and writes the same item.
func (s *Service) PutFilter(ctx context.Context, u id.UserID, compact []byte) (string, error) {
	if len(compact) > MaxFilterBytes {
		return "", httpapi.TooLarge("filter is over %d bytes", MaxFilterBytes)
	}
	sum := sha256.Sum256(compact)
	fid := base64.RawURLEncoding.EncodeToString(sum[:12])
	k := filterKey(u, fid)
	if err := s.T.Put(ctx, table.Item{PK: k.PK, SK: k.SK, Data: compact}, table.Cond{}); err != nil {
		return "", err
	}
	return fid, nil
}

// GetFilter returns a stored filter (nil if unknown).
func (s *Service) GetFilter(ctx context.Context, u id.UserID, fid string) (json.RawMessage, error) {
	if fid == "" || len(fid) > 128 {
		return nil, nil
	}
	it, err := s.T.Get(ctx, filterKey(u, fid))
	if errors.Is(err, table.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return it.Data, nil
}

// GlobalOfUsers returns the global account data of the given types for
// each of users that has it (users × types keys in one GetMany): the
// fan-out worker reads every member's push rules and ignore list at once.
// The read is eventually consistent where the engine offers it (half the
// price on DynamoDB): a change made within the last second or so may not
// show yet.
func (s *Service) GlobalOfUsers(ctx context.Context, users []id.UserID, types ...string) (map[id.UserID]map[string]json.RawMessage, error) {
	keys := make([]table.Key, 0, len(users)*len(types))
	for _, u := range users {
		for _, typ := range types {
			keys = append(keys, adKey(u, "", typ))
		}
	}
	items, err := table.GetManyEventual(ctx, s.T, keys)
	if err != nil {
		return nil, err
	}
	out := make(map[id.UserID]map[string]json.RawMessage, len(users))
	for _, it := range items {
		var ad AccountData
		if err := json.Unmarshal(it.Data, &ad); err != nil {
			return nil, err
		}
		u := id.UserID(strings.TrimPrefix(it.PK, "user#"))
		if out[u] == nil {
			out[u] = map[string]json.RawMessage{}
		}
		out[u][strings.TrimPrefix(it.SK, "ad#_#")] = ad.Content
	}
	return out, nil
}
