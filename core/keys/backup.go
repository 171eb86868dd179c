package keys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Server-side key backups.
//
// Versions are numbered by a per-user counter and never reused, so the
// latest version is simply the highest stored one, and a version at or
// below the counter that is no longer stored was deleted. Each stored room
// key is one item; every write of keys is one transaction that also checks
// the version still exists and moves the version's count and etag (atomic
// Adds), so counts stay exact under concurrent uploads.

func backupPK(u id.UserID) string         { return "backup#" + string(u) }
func backupCounter(u id.UserID) table.Key { return table.Key{PK: backupPK(u), SK: "counter"} }
func versionKey(u id.UserID, v int64) table.Key {
	return table.Key{PK: backupPK(u), SK: fmt.Sprintf("ver#%016d", v)}
}
func statKey(u id.UserID, v int64) table.Key {
	return table.Key{PK: backupPK(u), SK: fmt.Sprintf("stat#%016d", v)}
}
func etagKey(u id.UserID, v int64) table.Key {
	return table.Key{PK: backupPK(u), SK: fmt.Sprintf("etag#%016d", v)}
}
func roomKeysPK(u id.UserID, v int64) string { return fmt.Sprintf("rk#%s%s%016d", u, sep, v) }

// BackupInfo describes one backup version.
type BackupInfo struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Count     int64           `json:"count"`
	ETag      string          `json:"etag"`
	Version   string          `json:"version"`
}

// backupRecord is the stored part of a version.
type backupRecord struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
}

// BackupUpdate is the answer to key writes and deletes.
type BackupUpdate struct {
	ETag  string `json:"etag"`
	Count int64  `json:"count"`
}

func unknownVersion() error { return httpapi.NotFound("unknown backup version") }

// parseVersion reads a version string (false if it cannot be one of ours).
func parseVersion(s string) (int64, bool) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" || len(s) > 18 {
		return 0, false
	}
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil && v > 0
}

func checkBackupConfig(algorithm string, authData json.RawMessage) error {
	if algorithm == "" {
		return httpapi.MissingParam("algorithm is required")
	}
	if len(authData) == 0 || string(authData) == "null" {
		return httpapi.MissingParam("auth_data is required")
	}
	if _, ok := parseObject(authData); !ok {
		return httpapi.BadJSON("auth_data must be an object")
	}
	return nil
}

// CreateBackup starts a new backup version, which becomes the current one.
func (s *Service) CreateBackup(ctx context.Context, u id.UserID, algorithm string, authData json.RawMessage) (string, error) {
	if err := checkBackupConfig(algorithm, authData); err != nil {
		return "", err
	}
	v, err := s.T.Add(ctx, backupCounter(u), 1)
	if err != nil {
		return "", err
	}
	ad, _ := parseObject(authData)
	data, _ := json.Marshal(backupRecord{Algorithm: algorithm, AuthData: ad.encode()})
	k := versionKey(u, v)
	if err := s.T.Put(ctx, table.Item{PK: k.PK, SK: k.SK, Data: data, Version: 1}, table.IfNotExists()); err != nil {
		return "", err
	}
	return strconv.FormatInt(v, 10), nil
}

// currentVersion is the latest version (0 if the user has no backup).
func (s *Service) currentVersion(ctx context.Context, u id.UserID) (int64, *table.Item, error) {
	page, err := s.T.Query(ctx, table.Query{PK: backupPK(u), Prefix: "ver#", Reverse: true, Limit: 1})
	if err != nil {
		return 0, nil, err
	}
	if len(page.Items) == 0 {
		return 0, nil, nil
	}
	it := page.Items[0]
	v, err := strconv.ParseInt(strings.TrimPrefix(it.SK, "ver#"), 10, 64)
	if err != nil {
		return 0, nil, internal("bad backup version item %s", it.Key())
	}
	return v, &it, nil
}

// getVersion loads a stored version (unknownVersion if there is none).
func (s *Service) getVersion(ctx context.Context, u id.UserID, version string) (int64, *table.Item, error) {
	v, ok := parseVersion(version)
	if !ok {
		return 0, nil, unknownVersion()
	}
	it, err := s.T.Get(ctx, versionKey(u, v))
	if errors.Is(err, table.ErrNotFound) {
		return 0, nil, unknownVersion()
	}
	if err != nil {
		return 0, nil, err
	}
	return v, &it, nil
}

func (s *Service) stats(ctx context.Context, u id.UserID, v int64) (BackupUpdate, error) {
	items, err := s.T.GetMany(ctx, []table.Key{statKey(u, v), etagKey(u, v)})
	if err != nil {
		return BackupUpdate{}, err
	}
	st := BackupUpdate{ETag: "0"}
	for _, it := range items {
		switch it.SK {
		case statKey(u, v).SK:
			st.Count = it.Num
		case etagKey(u, v).SK:
			st.ETag = strconv.FormatInt(it.Num, 10)
		}
	}
	return st, nil
}

func (s *Service) info(ctx context.Context, u id.UserID, v int64, it *table.Item) (*BackupInfo, error) {
	var rec backupRecord
	if err := json.Unmarshal(it.Data, &rec); err != nil {
		return nil, err
	}
	st, err := s.stats(ctx, u, v)
	if err != nil {
		return nil, err
	}
	return &BackupInfo{Algorithm: rec.Algorithm, AuthData: rec.AuthData, Count: st.Count, ETag: st.ETag,
		Version: strconv.FormatInt(v, 10)}, nil
}

// LatestBackup describes the current backup version.
func (s *Service) LatestBackup(ctx context.Context, u id.UserID) (*BackupInfo, error) {
	v, it, err := s.currentVersion(ctx, u)
	if err != nil {
		return nil, err
	}
	if it == nil {
		return nil, httpapi.NotFound("no current backup version")
	}
	return s.info(ctx, u, v, it)
}

// GetBackup describes one backup version.
func (s *Service) GetBackup(ctx context.Context, u id.UserID, version string) (*BackupInfo, error) {
	v, it, err := s.getVersion(ctx, u, version)
	if err != nil {
		return nil, err
	}
	return s.info(ctx, u, v, it)
}

// UpdateBackup replaces a version's auth_data (the algorithm cannot change).
func (s *Service) UpdateBackup(ctx context.Context, u id.UserID, version, algorithm string, authData json.RawMessage, bodyVersion string) error {
	if err := checkBackupConfig(algorithm, authData); err != nil {
		return err
	}
	if bodyVersion != "" && bodyVersion != version {
		return invalid("version in the body does not match the version in the path")
	}
	for range maxAttempts {
		v, it, err := s.getVersion(ctx, u, version)
		if err != nil {
			return err
		}
		var rec backupRecord
		if err := json.Unmarshal(it.Data, &rec); err != nil {
			return err
		}
		if rec.Algorithm != algorithm {
			return invalid("algorithm does not match the backup's algorithm %q", rec.Algorithm)
		}
		ad, _ := parseObject(authData)
		rec.AuthData = ad.encode()
		data, _ := json.Marshal(rec)
		k := versionKey(u, v)
		err = s.T.Put(ctx, table.Item{PK: k.PK, SK: k.SK, Data: data, Version: it.Version + 1}, table.IfVersion(it.Version))
		if errors.Is(err, table.ErrConditionFailed) {
			continue
		}
		return err
	}
	return table.ErrConflict
}

// DeleteBackup deletes a version and its keys. Deleting a version that was
// already deleted succeeds; one that never existed is M_NOT_FOUND.
func (s *Service) DeleteBackup(ctx context.Context, u id.UserID, version string) error {
	v, ok := parseVersion(version)
	if !ok {
		return unknownVersion()
	}
	err := s.T.Delete(ctx, versionKey(u, v), table.IfExists())
	if errors.Is(err, table.ErrConditionFailed) {
		c, err := s.T.Get(ctx, backupCounter(u))
		if errors.Is(err, table.ErrNotFound) || (err == nil && v > c.Num) {
			return unknownVersion()
		}
		if err != nil {
			return err
		}
		// Deleted before; finish the cleanup in case that one was cut short.
	} else if err != nil {
		return err
	}
	items, err := s.queryAll(ctx, roomKeysPK(u, v), "")
	if err != nil {
		return err
	}
	keys := []table.Key{statKey(u, v), etagKey(u, v)}
	for _, it := range items {
		keys = append(keys, it.Key())
	}
	for len(keys) > 0 {
		n := min(len(keys), table.MaxTxItems)
		ops := make([]table.Op, n)
		for i, k := range keys[:n] {
			ops[i] = table.Delete(k, table.Cond{})
		}
		if err := s.T.Transact(ctx, ops); err != nil {
			return err
		}
		keys = keys[n:]
	}
	return nil
}

// RoomKey is one backed-up session key (key_backup_data).
type RoomKey struct {
	FirstMessageIndex int64 `json:"first_message_index"`
	ForwardedCount    int64 `json:"forwarded_count"`
	IsVerified        bool  `json:"is_verified"`
	raw               json.RawMessage
}

// ParseRoomKey validates key_backup_data.
func ParseRoomKey(raw json.RawMessage) (*RoomKey, error) {
	o, ok := parseObject(raw)
	if !ok {
		return nil, httpapi.BadJSON("key data must be an object")
	}
	var k RoomKey
	for _, f := range []struct {
		name string
		dst  any
	}{
		{"first_message_index", &k.FirstMessageIndex},
		{"forwarded_count", &k.ForwardedCount},
		{"is_verified", &k.IsVerified},
	} {
		v, ok := o[f.name]
		if !ok {
			return nil, httpapi.MissingParam("%s is required", f.name)
		}
		if err := json.Unmarshal(v, f.dst); err != nil {
			return nil, httpapi.BadJSON("%s has the wrong type", f.name)
		}
	}
	if k.FirstMessageIndex < 0 || k.ForwardedCount < 0 {
		return nil, invalid("first_message_index and forwarded_count must not be negative")
	}
	sd, ok := o["session_data"]
	if !ok {
		return nil, httpapi.MissingParam("session_data is required")
	}
	if _, ok := parseObject(sd); !ok {
		return nil, httpapi.BadJSON("session_data must be an object")
	}
	k.raw = o.encode()
	return &k, nil
}

// better reports whether key k should replace old (the spec's order:
// verified beats unverified, then the lower first message index, then the
// lower forwarded count; a tie keeps the old key).
func (k *RoomKey) better(old *RoomKey) bool {
	if k.IsVerified != old.IsVerified {
		return k.IsVerified
	}
	if k.FirstMessageIndex != old.FirstMessageIndex {
		return k.FirstMessageIndex < old.FirstMessageIndex
	}
	return k.ForwardedCount < old.ForwardedCount
}

// RoomKeyUpload is one key of an upload.
type RoomKeyUpload struct {
	Room    id.RoomID
	Session id.SessionID
	Key     *RoomKey
}

// wrongVersion is the answer to writes into a version that is not current.
func wrongVersion(current int64) error {
	return (&httpapi.Error{Status: http.StatusForbidden, Code: "M_WRONG_ROOM_KEYS_VERSION",
		Message: "keys can only be written to the current backup version"}).With("current_version", strconv.FormatInt(current, 10))
}

// PutRoomKeys stores keys in the current backup version, each unless the
// stored one for its session is better.
func (s *Service) PutRoomKeys(ctx context.Context, u id.UserID, version string, keys []RoomKeyUpload) (*BackupUpdate, error) {
	if version == "" {
		return nil, httpapi.MissingParam("the version query parameter is required")
	}
	for _, k := range keys {
		if badKeyName(string(k.Room)) || badKeyName(string(k.Session)) {
			return nil, invalid("bad room or session id")
		}
	}
	cur, _, err := s.currentVersion(ctx, u)
	if err != nil {
		return nil, err
	}
	if cur == 0 {
		return nil, unknownVersion()
	}
	if v, ok := parseVersion(version); !ok || v != cur {
		return nil, wrongVersion(cur)
	}
	// Each transaction: the version check, the keys, the count and the etag.
	const perTx = table.MaxTxItems - 3
	for len(keys) > 0 {
		n := min(len(keys), perTx)
		if err := s.putRoomKeyBatch(ctx, u, cur, keys[:n]); err != nil {
			return nil, err
		}
		keys = keys[n:]
	}
	st, err := s.stats(ctx, u, cur)
	return &st, err
}

func (s *Service) putRoomKeyBatch(ctx context.Context, u id.UserID, v int64, batch []RoomKeyUpload) error {
	pk := roomKeysPK(u, v)
	for range maxAttempts {
		ks := make([]table.Key, len(batch))
		for i, k := range batch {
			ks[i] = table.Key{PK: pk, SK: string(k.Room) + sep + string(k.Session)}
		}
		items, err := s.T.GetMany(ctx, ks)
		if err != nil {
			return err
		}
		have := make(map[string]table.Item, len(items))
		for _, it := range items {
			have[it.SK] = it
		}
		ops := []table.Op{table.Check(versionKey(u, v), table.IfExists())}
		added := int64(0)
		planned := map[string]int{}
		for _, k := range batch {
			sk := string(k.Room) + sep + string(k.Session)
			if i, dup := planned[sk]; dup {
				// The same session twice in one request: keep the better one.
				var prev RoomKey
				_ = json.Unmarshal(ops[i].Item.Data, &prev)
				if k.Key.better(&prev) {
					ops[i].Item.Data = k.Key.raw
				}
				continue
			}
			cond, version := table.IfNotExists(), int64(1)
			if old, ok := have[sk]; ok {
				var ok2 RoomKey
				if err := json.Unmarshal(old.Data, &ok2); err == nil && !k.Key.better(&ok2) {
					continue
				}
				cond, version = table.IfVersion(old.Version), old.Version+1
			} else {
				added++
			}
			planned[sk] = len(ops)
			ops = append(ops, table.Put(table.Item{PK: pk, SK: sk, Data: k.Key.raw, Version: version}, cond))
		}
		if len(ops) == 1 {
			return nil // nothing better than what is stored
		}
		if added > 0 {
			ops = append(ops, table.Add(statKey(u, v), added, table.Cond{}))
		}
		ops = append(ops, table.Add(etagKey(u, v), 1, table.Cond{}))
		err = s.T.Transact(ctx, ops)
		switch i := failedOp(err); {
		case i == 0:
			return unknownVersion() // deleted meanwhile
		case i > 0:
			continue // another writer touched one of these sessions
		}
		if errors.Is(err, table.ErrConflict) {
			continue
		}
		return err
	}
	return table.ErrConflict
}

// RoomKeySelector picks keys of a version: all, one room's or one session's.
type RoomKeySelector struct {
	Room    id.RoomID
	Session id.SessionID
}

func (sel RoomKeySelector) prefix() string {
	switch {
	case sel.Session != "":
		return string(sel.Room) + sep + string(sel.Session)
	case sel.Room != "":
		return string(sel.Room) + sep
	}
	return ""
}

func (s *Service) selectRoomKeys(ctx context.Context, u id.UserID, version string, sel RoomKeySelector) (int64, []table.Item, error) {
	if version == "" {
		return 0, nil, httpapi.MissingParam("the version query parameter is required")
	}
	if badKeyName(string(sel.Room)) && sel.Room != "" || badKeyName(string(sel.Session)) && sel.Session != "" {
		return 0, nil, httpapi.NotFound("no such room key")
	}
	v, _, err := s.getVersion(ctx, u, version)
	if err != nil {
		return 0, nil, err
	}
	if sel.Session != "" {
		it, err := s.T.Get(ctx, table.Key{PK: roomKeysPK(u, v), SK: sel.prefix()})
		if errors.Is(err, table.ErrNotFound) {
			return v, nil, nil
		}
		if err != nil {
			return 0, nil, err
		}
		return v, []table.Item{it}, nil
	}
	items, err := s.queryAll(ctx, roomKeysPK(u, v), sel.prefix())
	return v, items, err
}

// RoomKeys returns the selected keys: room → session → key data.
func (s *Service) RoomKeys(ctx context.Context, u id.UserID, version string, sel RoomKeySelector) (map[id.RoomID]map[id.SessionID]json.RawMessage, error) {
	_, items, err := s.selectRoomKeys(ctx, u, version, sel)
	if err != nil {
		return nil, err
	}
	out := map[id.RoomID]map[id.SessionID]json.RawMessage{}
	for _, it := range items {
		room, session, ok := strings.Cut(it.SK, sep)
		if !ok {
			continue
		}
		if out[id.RoomID(room)] == nil {
			out[id.RoomID(room)] = map[id.SessionID]json.RawMessage{}
		}
		out[id.RoomID(room)][id.SessionID(session)] = it.Data
	}
	return out, nil
}

// DeleteRoomKeys removes the selected keys from a version.
func (s *Service) DeleteRoomKeys(ctx context.Context, u id.UserID, version string, sel RoomKeySelector) (*BackupUpdate, error) {
	for range maxAttempts {
		v, items, err := s.selectRoomKeys(ctx, u, version, sel)
		if err != nil {
			return nil, err
		}
		retry := false
		for len(items) > 0 && !retry {
			n := min(len(items), table.MaxTxItems-3)
			ops := make([]table.Op, 0, n+3)
			ops = append(ops, table.Check(versionKey(u, v), table.IfExists()))
			for _, it := range items[:n] {
				ops = append(ops, table.Delete(it.Key(), table.IfExists()))
			}
			ops = append(ops, table.Add(statKey(u, v), -int64(n), table.Cond{}), table.Add(etagKey(u, v), 1, table.Cond{}))
			err := s.T.Transact(ctx, ops)
			if failedOp(err) == 0 {
				return nil, unknownVersion() // deleted meanwhile
			}
			if failedOp(err) > 0 || errors.Is(err, table.ErrConflict) {
				retry = true // someone else deleted one of them: select again
				break
			}
			if err != nil {
				return nil, err
			}
			items = items[n:]
		}
		if retry {
			continue
		}
		st, err := s.stats(ctx, u, v)
		return &st, err
	}
	return nil, table.ErrConflict
}
