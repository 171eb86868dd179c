package keys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// Keys of users on other servers.
//
// A remote user's keys are fetched from their server when a local client
// asks for them (/keys/query, /keys/claim). For users who share a room with
// the requester the device list is cached in the same items local keys use
// (dev#<device>, xsk#master, xsk#self_signing under e2e#<@user>), together
// with a marker item that says whether the copy is complete:
//
//	e2e#<@user>   remote   d = {synced, stream_id}; v bumps with every change
//
// The copy is kept current by the m.device_list_update and
// m.signing_key_update EDUs the user's server sends to every server sharing
// a room with them; an update whose prev_id we have not seen means one was
// lost, and the whole list is fetched again (/user/devices). Any change of
// who shares a room drops the marker (we may stop hearing of changes), so
// the next query fetches afresh. One-time key claims are never cached.

// EDU types of device-list tracking.
const (
	EDUDeviceListUpdate = "m.device_list_update"
	EDUSigningKeyUpdate = "m.signing_key_update"
)

// DefaultRemoteTimeout bounds the requests to other servers of one
// /keys/query or /keys/claim when the client gives no timeout.
const DefaultRemoteTimeout = 10 * time.Second

// Federation is what the key store needs from the server-server API
// (core/federation implements it).
type Federation interface {
	// QueryUserKeys is POST /_matrix/federation/v1/user/keys/query.
	QueryUserKeys(ctx context.Context, server string, want map[id.UserID][]id.DeviceID) (*QueryResult, error)
	// ClaimUserKeys is POST /_matrix/federation/v1/user/keys/claim.
	ClaimUserKeys(ctx context.Context, server string, want map[id.UserID]map[id.DeviceID]string) (map[id.UserID]map[id.DeviceID]map[string]json.RawMessage, error)
	// UserDevices is GET /_matrix/federation/v1/user/devices/{userId}.
	UserDevices(ctx context.Context, server string, u id.UserID) (*UserDevices, error)
	// SendEDU queues an EDU for the destinations.
	SendEDU(ctx context.Context, destinations []string, typ string, content any) error
}

// UserDevices is the answer of /user/devices: a user's whole device list.
type UserDevices struct {
	UserID         id.UserID       `json:"user_id"`
	StreamID       int64           `json:"stream_id"`
	Devices        []UserDevice    `json:"devices"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
}

// UserDevice is one device of a /user/devices answer.
type UserDevice struct {
	DeviceID    id.DeviceID     `json:"device_id"`
	Keys        json.RawMessage `json:"keys"`
	DisplayName string          `json:"device_display_name,omitempty"`
}

// DeviceListUpdate is the content of an m.device_list_update EDU.
type DeviceListUpdate struct {
	UserID      id.UserID       `json:"user_id"`
	DeviceID    id.DeviceID     `json:"device_id"`
	DisplayName string          `json:"device_display_name,omitempty"`
	StreamID    int64           `json:"stream_id"`
	PrevID      []int64         `json:"prev_id,omitempty"`
	Deleted     bool            `json:"deleted,omitempty"`
	Keys        json.RawMessage `json:"keys,omitempty"`
}

// SigningKeyUpdate is the content of an m.signing_key_update EDU.
type SigningKeyUpdate struct {
	UserID         id.UserID       `json:"user_id"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
}

// remoteMarker says how complete our copy of a remote user's devices is.
type remoteMarker struct {
	Synced   bool  `json:"synced"`
	StreamID int64 `json:"stream_id"`
}

func markerKey(u id.UserID) table.Key { return table.Key{PK: e2ePK(u), SK: "remote"} }

// dlSeqKey is a local user's device-list stream id counter (the stream_id
// of the EDUs we send about them).
func dlSeqKey(u id.UserID) table.Key { return table.Key{PK: e2ePK(u), SK: "dlseq"} }

func serverOf(u id.UserID) string {
	_, server, err := u.Parse()
	if err != nil {
		return ""
	}
	return server
}

// failure is one entry of a response's failures map.
func failure(err error) map[string]any {
	return map[string]any{"status": 503, "message": err.Error()}
}

// RemoteTimeout turns a client's timeout (ms, nil if absent) into a duration.
func RemoteTimeout(ms *int64) time.Duration {
	if ms == nil || *ms <= 0 {
		return DefaultRemoteTimeout
	}
	return min(time.Duration(*ms)*time.Millisecond, time.Minute)
}

// byServer groups remote users by their server.
func byServer[V any](s *Service, want map[id.UserID]V) map[string][]id.UserID {
	out := map[string][]id.UserID{}
	for u := range want {
		if s.IsLocal(u) {
			continue
		}
		if server := serverOf(u); server != "" {
			out[server] = append(out[server], u)
		}
	}
	return out
}

// forEachServer runs f for every server at once, each bounded by timeout.
func forEachServer(ctx context.Context, servers map[string][]id.UserID, timeout time.Duration, f func(context.Context, string, []id.UserID)) {
	if timeout <= 0 {
		timeout = DefaultRemoteTimeout
	}
	var wg sync.WaitGroup
	for server, users := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			f(ctx, server, users)
		}()
	}
	wg.Wait()
}

// queryRemote adds remote users' keys to res: from the cache, by resyncing
// users who share a room with requester, or by asking their server.
func (s *Service) queryRemote(ctx context.Context, requester id.UserID, want map[id.UserID][]id.DeviceID, timeout time.Duration, res *QueryResult) error {
	servers := byServer(s, want)
	if len(servers) == 0 {
		return nil
	}
	if s.Fed == nil {
		for server := range servers {
			res.Failures[server] = failure(errors.New("federation is not configured"))
		}
		return nil
	}
	var shareOnce sync.Once
	var sh *shared
	var shErr error
	sharesRoom := func(u id.UserID) (bool, error) {
		shareOnce.Do(func() { sh, shErr = s.sharing(ctx, requester) })
		if shErr != nil {
			return false, shErr
		}
		return sh.users[u], nil
	}
	var mu sync.Mutex
	var firstErr error
	forEachServer(ctx, servers, timeout, func(ctx context.Context, server string, users []id.UserID) {
		part, err := s.queryServer(ctx, requester, server, users, want, sharesRoom)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			var se storeError
			if errors.As(err, &se) && firstErr == nil {
				firstErr = se.err
			}
			res.Failures[server] = failure(err)
			return
		}
		for u, ds := range part.DeviceKeys {
			res.DeviceKeys[u] = ds
		}
		for u, k := range part.MasterKeys {
			res.MasterKeys[u] = k
		}
		for u, k := range part.SelfSigningKeys {
			res.SelfSigningKeys[u] = k
		}
	})
	return firstErr
}

// storeError marks a failure of our own storage (a 500), not of the
// remote server (a failures entry).
type storeError struct{ err error }

func (e storeError) Error() string { return e.err.Error() }

func (s *Service) queryServer(ctx context.Context, requester id.UserID, server string, users []id.UserID, want map[id.UserID][]id.DeviceID,
	sharesRoom func(id.UserID) (bool, error)) (*QueryResult, error) {
	res := newQueryResult()
	ks := make([]table.Key, len(users))
	for i, u := range users {
		ks[i] = markerKey(u)
	}
	markers, err := s.T.GetMany(ctx, ks)
	if err != nil {
		return nil, storeError{err}
	}
	synced := map[id.UserID]bool{}
	for _, it := range markers {
		var m remoteMarker
		if json.Unmarshal(it.Data, &m) == nil && m.Synced {
			synced[id.UserID(strings.TrimPrefix(it.PK, "e2e#"))] = true
		}
	}
	ask := map[id.UserID][]id.DeviceID{}
	for _, u := range users {
		cache := synced[u]
		if !cache {
			shares, err := sharesRoom(u)
			if err != nil {
				return nil, storeError{err}
			}
			if shares {
				snap, stored, err := s.resync(ctx, u)
				if err != nil {
					return nil, err
				}
				if !stored {
					// Another resync holds the copy: answer from ours.
					addSnapshot(res, snap, want[u])
					continue
				}
				cache = true
			}
		}
		if !cache {
			ask[u] = want[u]
			if ask[u] == nil {
				ask[u] = []id.DeviceID{} // all devices: a list, not null, on the wire
			}
			continue
		}
		view, err := s.userKeys(ctx, requester, u, want[u])
		if err != nil {
			return nil, storeError{err}
		}
		res.DeviceKeys[u] = view.devices
		if view.master != nil {
			res.MasterKeys[u] = view.master
		}
		if view.selfSigning != nil {
			res.SelfSigningKeys[u] = view.selfSigning
		}
	}
	if len(ask) == 0 {
		return res, nil
	}
	got, err := s.Fed.QueryUserKeys(ctx, server, ask)
	if err != nil {
		return nil, err
	}
	for u := range ask {
		devs := map[id.DeviceID]json.RawMessage{}
		for d, raw := range got.DeviceKeys[u] {
			if o, ok := parseObject(raw); ok && remoteDeviceOK(o, u, d) {
				devs[d] = raw
			}
		}
		res.DeviceKeys[u] = devs
		if k := got.MasterKeys[u]; k != nil && crossSigningOwner(k) == u {
			res.MasterKeys[u] = k
		}
		if k := got.SelfSigningKeys[u]; k != nil && crossSigningOwner(k) == u {
			res.SelfSigningKeys[u] = k
		}
	}
	return res, nil
}

// remoteDeviceOK checks that device keys from another server are what they
// claim to be: the device's keys, signed by the device itself.
func remoteDeviceOK(o object, u id.UserID, d id.DeviceID) bool {
	uid, _ := o.str("user_id")
	did, _ := o.str("device_id")
	if id.UserID(uid) != u || id.DeviceID(did) != d || badKeyName(string(d)) {
		return false
	}
	ed := identityOf(o, d).Ed25519
	return validEd25519(ed) && o.verify(u, string(d), ed)
}

func crossSigningOwner(raw json.RawMessage) id.UserID {
	var k struct {
		UserID id.UserID `json:"user_id"`
	}
	_ = json.Unmarshal(raw, &k)
	return k.UserID
}

// Resync fetches a remote user's whole device list from their server and
// stores it as our copy. The copy is marked complete only if no update
// arrived meanwhile (the marker's version is checked at the end).
func (s *Service) Resync(ctx context.Context, u id.UserID) (*UserDevices, error) {
	snap, _, err := s.resync(ctx, u)
	return snap, err
}

// resync is Resync; stored reports whether the snapshot was written to
// our copy (not when a concurrent resync or update holds the marker).
func (s *Service) resync(ctx context.Context, u id.UserID) (snap *UserDevices, stored bool, err error) {
	if s.Fed == nil {
		return nil, false, errors.New("federation is not configured")
	}
	mk := markerKey(u)
	cond, version := table.IfNotExists(), int64(1)
	var old remoteMarker
	it, err := s.T.Get(ctx, mk)
	switch {
	case err == nil:
		_ = json.Unmarshal(it.Data, &old)
		cond, version = table.IfVersion(it.Version), it.Version+1
	case !errors.Is(err, table.ErrNotFound):
		return nil, false, storeError{err}
	}
	pending, _ := json.Marshal(remoteMarker{StreamID: old.StreamID})
	cache := s.T.Put(ctx, table.Item{PK: mk.PK, SK: mk.SK, Data: pending, Version: version}, cond) == nil
	snap, err = s.Fed.UserDevices(ctx, serverOf(u), u)
	if err != nil {
		return nil, false, err
	}
	if snap.UserID != u {
		return nil, false, fmt.Errorf("%s answered for %s when asked for %s", serverOf(u), snap.UserID, u)
	}
	if !cache {
		return snap, false, nil
	}
	if err := s.storeSnapshot(ctx, snap); err != nil {
		return nil, false, storeError{err}
	}
	done, _ := json.Marshal(remoteMarker{Synced: true, StreamID: snap.StreamID})
	err = s.T.Put(ctx, table.Item{PK: mk.PK, SK: mk.SK, Data: done, Version: version + 1}, table.IfVersion(version))
	if err != nil && !errors.Is(err, table.ErrConditionFailed) {
		return nil, false, storeError{err}
	}
	return snap, true, nil
}

// addSnapshot puts a user's keys from a /user/devices answer into res
// (only the devices in only, if it names any).
func addSnapshot(res *QueryResult, snap *UserDevices, only []id.DeviceID) {
	u := snap.UserID
	devs := map[id.DeviceID]json.RawMessage{}
	for _, d := range snap.Devices {
		if len(only) > 0 && !slices.Contains(only, d.DeviceID) {
			continue
		}
		if it, ok := remoteDeviceItem(u, d); ok {
			devs[d.DeviceID] = it.Data
		}
	}
	res.DeviceKeys[u] = devs
	if len(snap.MasterKey) > 0 && crossSigningOwner(snap.MasterKey) == u {
		res.MasterKeys[u] = snap.MasterKey
	}
	if len(snap.SelfSigningKey) > 0 && crossSigningOwner(snap.SelfSigningKey) == u {
		res.SelfSigningKeys[u] = snap.SelfSigningKey
	}
}

// remoteDeviceItem is how a remote device's keys are stored: as its server
// sent them, with the display name in unsigned.
func remoteDeviceItem(u id.UserID, d UserDevice) (table.Item, bool) {
	o, ok := parseObject(d.Keys)
	if !ok || !remoteDeviceOK(o, u, d.DeviceID) {
		return table.Item{}, false
	}
	unsigned := map[string]any{}
	if d.DisplayName != "" {
		unsigned["device_display_name"] = d.DisplayName
	}
	o["unsigned"], _ = json.Marshal(unsigned)
	k := devKey(u, d.DeviceID)
	return table.Item{PK: k.PK, SK: k.SK, Data: o.encode()}, true
}

// storeSnapshot replaces our copy of a remote user's devices and
// cross-signing keys with snap.
func (s *Service) storeSnapshot(ctx context.Context, snap *UserDevices) error {
	u := snap.UserID
	have, err := s.queryAll(ctx, e2ePK(u), "dev#")
	if err != nil {
		return err
	}
	var ops []table.Op
	keep := map[string]bool{}
	for _, d := range snap.Devices {
		if it, ok := remoteDeviceItem(u, d); ok {
			keep[it.SK] = true
			ops = append(ops, table.Put(it, table.Cond{}))
		}
	}
	for _, it := range have {
		if !keep[it.SK] {
			ops = append(ops, table.Delete(it.Key(), table.Cond{}))
		}
	}
	ops = append(ops, s.crossSigningOps(u, UsageMaster, snap.MasterKey, true)...)
	ops = append(ops, s.crossSigningOps(u, UsageSelfSigning, snap.SelfSigningKey, true)...)
	for len(ops) > 0 {
		n := min(len(ops), table.MaxTxItems)
		if err := s.T.Transact(ctx, ops[:n]); err != nil {
			return err
		}
		ops = ops[n:]
	}
	return nil
}

// crossSigningOps stores (or, when absent and replace is set, deletes) a
// remote user's cross-signing key.
func (s *Service) crossSigningOps(u id.UserID, usage string, raw json.RawMessage, replace bool) []table.Op {
	k := xskKey(u, usage)
	if len(raw) == 0 || string(raw) == "null" {
		if replace {
			return []table.Op{table.Delete(k, table.Cond{})}
		}
		return nil
	}
	o, ok := parseObject(raw)
	if !ok || crossSigningOwner(raw) != u {
		return nil
	}
	if _, ok := publicKeyOf(o); !ok {
		return nil
	}
	return []table.Op{table.Put(table.Item{PK: k.PK, SK: k.SK, Data: o.encode()}, table.Cond{})}
}

// ---- inbound EDUs ----

// ApplyDeviceListUpdate applies an m.device_list_update EDU from origin:
// the change is recorded for local clients, and our copy of the user's
// device list (if we keep one) is updated, or fetched again when an
// earlier update was missed.
func (s *Service) ApplyDeviceListUpdate(ctx context.Context, origin string, content json.RawMessage) error {
	var upd DeviceListUpdate
	if err := json.Unmarshal(content, &upd); err != nil {
		return fmt.Errorf("malformed m.device_list_update: %w", err)
	}
	if serverOf(upd.UserID) != origin || origin == s.ServerName {
		return fmt.Errorf("m.device_list_update for %s from %s", upd.UserID, origin)
	}
	if badKeyName(string(upd.DeviceID)) {
		return fmt.Errorf("m.device_list_update with a bad device id")
	}
	u := upd.UserID
	mk := markerKey(u)
	for range maxAttempts {
		it, err := s.T.Get(ctx, mk)
		if errors.Is(err, table.ErrNotFound) {
			return s.commit(ctx, change{Users: []id.UserID{u}}, nil)
		}
		if err != nil {
			return err
		}
		var m remoteMarker
		_ = json.Unmarshal(it.Data, &m)
		if m.Synced && upd.StreamID <= m.StreamID {
			return nil // seen already
		}
		var ops []table.Op
		gap := false
		switch {
		case !m.Synced:
			// A resync is under way or due: make it start over.
			ops = append(ops, markerOp(it, m))
		case len(upd.PrevID) == 0 || slices.Contains(upd.PrevID, m.StreamID):
			devOps, err := s.deviceUpdateOps(ctx, upd)
			if err != nil {
				return err
			}
			ops = append(devOps, markerOp(it, remoteMarker{Synced: true, StreamID: upd.StreamID}))
		default:
			gap = true
			ops = append(ops, markerOp(it, remoteMarker{StreamID: m.StreamID}))
		}
		err = s.commit(ctx, change{Users: []id.UserID{u}}, ops)
		if failedOp(err) >= 0 {
			continue
		}
		if err != nil || !gap {
			return err
		}
		_, _, err = s.resync(ctx, u)
		return err
	}
	return table.ErrConflict
}

// markerOp replaces the marker item it (as read) with m, bumping its version.
func markerOp(it table.Item, m remoteMarker) table.Op {
	d, _ := json.Marshal(m)
	return table.Put(table.Item{PK: it.PK, SK: it.SK, Data: d, Version: it.Version + 1}, table.IfVersion(it.Version))
}

func (s *Service) deviceUpdateOps(ctx context.Context, upd DeviceListUpdate) ([]table.Op, error) {
	k := devKey(upd.UserID, upd.DeviceID)
	if upd.Deleted {
		return []table.Op{table.Delete(k, table.Cond{})}, nil
	}
	keys := upd.Keys
	if len(keys) == 0 || string(keys) == "null" {
		// A new name only: keep the keys we have.
		it, err := s.T.Get(ctx, k)
		if errors.Is(err, table.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		keys = it.Data
	}
	item, ok := remoteDeviceItem(upd.UserID, UserDevice{DeviceID: upd.DeviceID, Keys: keys, DisplayName: upd.DisplayName})
	if !ok {
		return nil, nil
	}
	return []table.Op{table.Put(item, table.Cond{})}, nil
}

// ApplySigningKeyUpdate applies an m.signing_key_update EDU from origin.
func (s *Service) ApplySigningKeyUpdate(ctx context.Context, origin string, content json.RawMessage) error {
	var upd SigningKeyUpdate
	if err := json.Unmarshal(content, &upd); err != nil {
		return fmt.Errorf("malformed m.signing_key_update: %w", err)
	}
	u := upd.UserID
	if serverOf(u) != origin || origin == s.ServerName {
		return fmt.Errorf("m.signing_key_update for %s from %s", u, origin)
	}
	mk := markerKey(u)
	for range maxAttempts {
		it, err := s.T.Get(ctx, mk)
		if errors.Is(err, table.ErrNotFound) {
			return s.commit(ctx, change{Users: []id.UserID{u}}, nil)
		}
		if err != nil {
			return err
		}
		var m remoteMarker
		_ = json.Unmarshal(it.Data, &m)
		ops := []table.Op{markerOp(it, m)}
		if m.Synced {
			ops = append(ops, s.crossSigningOps(u, UsageMaster, upd.MasterKey, false)...)
			ops = append(ops, s.crossSigningOps(u, UsageSelfSigning, upd.SelfSigningKey, false)...)
		}
		err = s.commit(ctx, change{Users: []id.UserID{u}}, ops)
		if failedOp(err) == 0 {
			continue
		}
		return err
	}
	return table.ErrConflict
}

// forgetRemote drops our copies' markers: the next query fetches afresh.
func (s *Service) forgetRemote(ctx context.Context, users []id.UserID) {
	var ops []table.Op
	for _, u := range users {
		if !s.IsLocal(u) {
			ops = append(ops, table.Delete(markerKey(u), table.Cond{}))
		}
	}
	for len(ops) > 0 {
		n := min(len(ops), table.MaxTxItems)
		if err := s.T.Transact(ctx, ops[:n]); err != nil {
			s.Log.Warn("keys: dropping cached remote device lists", "err", err)
		}
		ops = ops[n:]
	}
}

// ---- claims ----

// claimRemote claims keys of remote users from their servers (never cached).
func (s *Service) claimRemote(ctx context.Context, want map[id.UserID]map[id.DeviceID]string, timeout time.Duration, res *ClaimResult) {
	servers := byServer(s, want)
	if len(servers) == 0 {
		return
	}
	var mu sync.Mutex
	forEachServer(ctx, servers, timeout, func(ctx context.Context, server string, users []id.UserID) {
		var got map[id.UserID]map[id.DeviceID]map[string]json.RawMessage
		err := errors.New("federation is not configured")
		if s.Fed != nil {
			ask := make(map[id.UserID]map[id.DeviceID]string, len(users))
			for _, u := range users {
				ask[u] = want[u]
			}
			got, err = s.Fed.ClaimUserKeys(ctx, server, ask)
		}
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			res.Failures[server] = failure(err)
			return
		}
		for _, u := range users {
			for d, keys := range got[u] {
				if _, asked := want[u][d]; !asked || len(keys) == 0 {
					continue
				}
				if res.OneTimeKeys[u] == nil {
					res.OneTimeKeys[u] = map[id.DeviceID]map[string]json.RawMessage{}
				}
				res.OneTimeKeys[u][d] = keys
			}
		}
	})
}

// ---- outbound: telling other servers about our users' changes ----

// destinations lists the other servers sharing a room with u.
func (s *Service) destinations(ctx context.Context, u id.UserID) ([]string, error) {
	if s.Servers == nil {
		return nil, nil
	}
	ms, err := s.Rooms.UserRooms(ctx, u)
	if err != nil {
		return nil, err
	}
	set := map[string]bool{}
	for _, m := range ms {
		if m.Membership != "join" {
			continue
		}
		servers, err := s.Servers(ctx, m.RoomID)
		if err != nil {
			return nil, err
		}
		for _, sv := range servers {
			if sv != s.ServerName {
				set[sv] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for sv := range set {
		out = append(out, sv)
	}
	slices.Sort(out)
	return out, nil
}

// announceDevices sends an m.device_list_update per device to every server
// sharing a room with u (deleted: the devices are gone). Best effort: a
// server that misses one notices the gap in stream ids and resyncs.
func (s *Service) announceDevices(ctx context.Context, u id.UserID, devs []id.DeviceID, deleted bool) {
	if s.Fed == nil || len(devs) == 0 || !s.IsLocal(u) {
		return
	}
	dests, err := s.destinations(ctx, u)
	if err != nil || len(dests) == 0 {
		if err != nil {
			s.Log.Warn("keys: finding servers to tell of device changes", "user", u, "err", err)
		}
		return
	}
	names := map[id.DeviceID]string{}
	if !deleted {
		if ds, err := s.Accounts.Devices(ctx, u); err == nil {
			for _, d := range ds {
				names[d.ID] = d.DisplayName
			}
		}
	}
	for _, d := range devs {
		upd := DeviceListUpdate{UserID: u, DeviceID: d, Deleted: deleted, DisplayName: names[d]}
		if !deleted {
			view, err := s.userKeys(ctx, "", u, []id.DeviceID{d})
			if err != nil {
				s.Log.Warn("keys: reading device keys to announce", "user", u, "err", err)
				return
			}
			if k, ok := view.devices[d]; ok {
				if o, ok := parseObject(k); ok {
					delete(o, "unsigned")
					upd.Keys = o.encode()
				}
			}
		}
		// The stream id moves after the change committed: a /user/devices
		// answer never names an id whose change it lacks.
		n, err := s.T.Add(ctx, dlSeqKey(u), 1)
		if err != nil {
			s.Log.Warn("keys: device-list stream id", "user", u, "err", err)
			return
		}
		upd.StreamID = n
		if n > 1 {
			upd.PrevID = []int64{n - 1}
		}
		if err := s.Fed.SendEDU(ctx, dests, EDUDeviceListUpdate, upd); err != nil {
			s.Log.Warn("keys: sending a device-list update", "user", u, "err", err)
		}
	}
}

// announceCrossSigning sends u's public cross-signing keys in an
// m.signing_key_update to every server sharing a room with them.
func (s *Service) announceCrossSigning(ctx context.Context, u id.UserID) {
	if s.Fed == nil || !s.IsLocal(u) {
		return
	}
	dests, err := s.destinations(ctx, u)
	if err != nil || len(dests) == 0 {
		return
	}
	view, err := s.userKeys(ctx, "", u, []id.DeviceID{})
	if err != nil {
		return
	}
	upd := SigningKeyUpdate{UserID: u, MasterKey: view.master, SelfSigningKey: view.selfSigning}
	if err := s.Fed.SendEDU(ctx, dests, EDUSigningKeyUpdate, upd); err != nil {
		s.Log.Warn("keys: sending a signing-key update", "user", u, "err", err)
	}
}

// DeviceList answers /user/devices for a local user: every device with
// keys, the public cross-signing keys, and the stream id the list is at.
func (s *Service) DeviceList(ctx context.Context, u id.UserID) (*UserDevices, error) {
	out := &UserDevices{UserID: u, Devices: []UserDevice{}}
	// The id first, then the data: the data is at least as new as the id.
	it, err := s.T.Get(ctx, dlSeqKey(u))
	switch {
	case err == nil:
		out.StreamID = it.Num
	case !errors.Is(err, table.ErrNotFound):
		return nil, err
	}
	devs, err := s.Accounts.Devices(ctx, u)
	if err != nil {
		return nil, err
	}
	view, err := s.userKeys(ctx, "", u, nil)
	if err != nil {
		return nil, err
	}
	for _, d := range devs {
		k, ok := view.devices[d.ID]
		if !ok {
			continue
		}
		if o, ok := parseObject(k); ok {
			delete(o, "unsigned")
			k = o.encode()
		}
		out.Devices = append(out.Devices, UserDevice{DeviceID: d.ID, Keys: k, DisplayName: d.DisplayName})
	}
	out.MasterKey, out.SelfSigningKey = view.master, view.selfSigning
	return out, nil
}
