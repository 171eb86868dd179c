package keys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Limits on one request.
const (
	MaxKeysPerUpload = 1000 // one-time plus fallback keys in one /keys/upload
	MaxQueryUsers    = 1000 // users in one /keys/query or /keys/claim
	MaxQueryDevices  = 5000 // devices named in one /keys/query or /keys/claim
	// MaxOneTimeKeys is how many unclaimed one-time keys one device may keep
	// on the server (clients keep about 50).
	MaxOneTimeKeys = 1000
)

// parallelism bounds the per-user lookups run at once for one request.
const parallelism = 8

// UploadRequest is the body of /keys/upload (members kept raw).
type UploadRequest struct {
	DeviceKeys   json.RawMessage            `json:"device_keys"`
	OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys"`
	FallbackKeys map[string]json.RawMessage `json:"fallback_keys"`
}

// deviceIdentity is a device's two identity keys.
type deviceIdentity struct {
	Ed25519    string
	Curve25519 string
}

// checkDeviceKeys validates device keys uploaded by user's device dev and
// returns them (canonical, without unsigned) with the identity keys.
func checkDeviceKeys(raw json.RawMessage, user id.UserID, dev id.DeviceID) (object, deviceIdentity, error) {
	var ident deviceIdentity
	o, ok := parseObject(raw)
	if !ok {
		return nil, ident, httpapi.BadJSON("device_keys must be an object")
	}
	delete(o, "unsigned")
	uid, ok := o.str("user_id")
	if !ok {
		return nil, ident, httpapi.MissingParam("device_keys.user_id is required")
	}
	if id.UserID(uid) != user {
		return nil, ident, invalid("device_keys.user_id %q is not the user making the request", uid)
	}
	did, ok := o.str("device_id")
	if !ok {
		return nil, ident, httpapi.MissingParam("device_keys.device_id is required")
	}
	if id.DeviceID(did) != dev {
		return nil, ident, invalid("device_keys.device_id %q is not the device making the request", did)
	}
	var algs []string
	if err := json.Unmarshal(o["algorithms"], &algs); err != nil || algs == nil {
		return nil, ident, httpapi.MissingParam("device_keys.algorithms must be a list of strings")
	}
	var keys map[string]string
	if err := json.Unmarshal(o["keys"], &keys); err != nil || keys == nil {
		return nil, ident, httpapi.MissingParam("device_keys.keys must be an object of strings")
	}
	ident.Ed25519 = keys["ed25519:"+string(dev)]
	ident.Curve25519 = keys["curve25519:"+string(dev)]
	if !validEd25519(ident.Ed25519) {
		return nil, ident, invalid("device_keys.keys must hold the device's ed25519 key as ed25519:%s", dev)
	}
	if ident.Curve25519 == "" {
		return nil, ident, invalid("device_keys.keys must hold the device's curve25519 key as curve25519:%s", dev)
	}
	if _, err := o.signatures(); err != nil {
		return nil, ident, httpapi.BadJSON("device_keys.signatures has the wrong shape")
	}
	if !o.verify(user, string(dev), ident.Ed25519) {
		return nil, ident, invalidSignature("device_keys is not signed by the device's own ed25519 key")
	}
	return o, ident, nil
}

func invalidSignature(format string, args ...any) *httpapi.Error {
	return &httpapi.Error{Status: 400, Code: "M_INVALID_SIGNATURE", Message: fmt.Sprintf(format, args...)}
}

func identityOf(o object, dev id.DeviceID) deviceIdentity {
	var keys map[string]string
	_ = json.Unmarshal(o["keys"], &keys)
	return deviceIdentity{Ed25519: keys["ed25519:"+string(dev)], Curve25519: keys["curve25519:"+string(dev)]}
}

// oneTimeKey is one parsed one-time or fallback key.
type oneTimeKey struct {
	Name  string // <algorithm>:<key id>
	Alg   string
	KeyID string
	Raw   json.RawMessage // canonical
}

// checkOneTimeKeys validates one-time or fallback keys; signed keys must
// carry a valid signature by the device (when its ed25519 key is known).
func checkOneTimeKeys(field string, in map[string]json.RawMessage, user id.UserID, dev id.DeviceID, ed string) ([]oneTimeKey, error) {
	out := make([]oneTimeKey, 0, len(in))
	names := make([]string, 0, len(in))
	for name := range in {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		raw := in[name]
		alg, kid, ok := strings.Cut(name, ":")
		if !ok || badKeyName(alg) || badKeyName(kid) {
			return nil, invalid("%s: key name %q is not <algorithm>:<key id>", field, name)
		}
		k := oneTimeKey{Name: name, Alg: alg, KeyID: kid}
		var plain string
		if json.Unmarshal(raw, &plain) == nil {
			if strings.HasPrefix(alg, "signed_") || plain == "" {
				return nil, invalid("%s: %s must be a signed key object", field, name)
			}
			k.Raw, _ = json.Marshal(plain)
			out = append(out, k)
			continue
		}
		o, ok := parseObject(raw)
		if !ok {
			return nil, httpapi.BadJSON("%s: %s must be a string or an object", field, name)
		}
		if key, ok := o.str("key"); !ok || key == "" {
			return nil, httpapi.MissingParam("%s: %s has no key", field, name)
		}
		if _, err := o.signatures(); err != nil {
			return nil, httpapi.BadJSON("%s: %s has malformed signatures", field, name)
		}
		if strings.HasPrefix(alg, "signed_") && ed != "" && !o.verify(user, string(dev), ed) {
			return nil, invalidSignature("%s: %s is not signed by the device", field, name)
		}
		k.Raw = o.encode()
		out = append(out, k)
	}
	return out, nil
}

// Upload stores keys for the caller's device and returns the one-time key
// counts afterwards.
func (s *Service) Upload(ctx context.Context, user id.UserID, dev id.DeviceID, req *UploadRequest) (map[string]int, error) {
	if len(req.OneTimeKeys)+len(req.FallbackKeys) > MaxKeysPerUpload {
		return nil, invalid("at most %d one-time and fallback keys per upload", MaxKeysPerUpload)
	}
	var stored object
	it, err := s.T.Get(ctx, devKey(user, dev))
	switch {
	case err == nil:
		stored, _ = parseObject(it.Data)
	case !errors.Is(err, table.ErrNotFound):
		return nil, err
	}
	ed := ""
	if stored != nil {
		ed = identityOf(stored, dev).Ed25519
	}
	var newDev object
	if len(req.DeviceKeys) > 0 && string(req.DeviceKeys) != "null" {
		o, ident, err := checkDeviceKeys(req.DeviceKeys, user, dev)
		if err != nil {
			return nil, err
		}
		if stored != nil {
			if old := identityOf(stored, dev); old != ident {
				return nil, invalid("the identity keys of device %s cannot be changed; log in as a new device instead", dev)
			}
		}
		newDev, ed = o, ident.Ed25519
	}
	otks, err := checkOneTimeKeys("one_time_keys", req.OneTimeKeys, user, dev, ed)
	if err != nil {
		return nil, err
	}
	fbks, err := checkOneTimeKeys("fallback_keys", req.FallbackKeys, user, dev, ed)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, k := range fbks {
		if seen[k.Alg] {
			return nil, invalid("fallback_keys: at most one key per algorithm")
		}
		seen[k.Alg] = true
	}
	if newDev != nil {
		if err := s.putDeviceKeys(ctx, user, dev, newDev); err != nil {
			return nil, err
		}
	}
	if len(otks) > 0 {
		if err := s.addOneTimeKeys(ctx, user, dev, otks); err != nil {
			return nil, err
		}
	}
	for _, k := range fbks {
		if err := s.putFallbackKey(ctx, user, dev, k); err != nil {
			return nil, err
		}
	}
	return s.OneTimeKeyCounts(ctx, user, dev)
}

// putDeviceKeys stores a device's keys, recording a device-list change
// unless they are exactly what is stored already.
func (s *Service) putDeviceKeys(ctx context.Context, user id.UserID, dev id.DeviceID, o object) error {
	data := o.encode()
	k := devKey(user, dev)
	for range maxAttempts {
		cond, version := table.IfNotExists(), int64(1)
		it, err := s.T.Get(ctx, k)
		switch {
		case err == nil:
			if string(it.Data) == string(data) {
				return nil
			}
			old, _ := parseObject(it.Data)
			if identityOf(old, dev) != identityOf(o, dev) {
				return invalid("the identity keys of device %s cannot be changed; log in as a new device instead", dev)
			}
			cond, version = table.IfVersion(it.Version), it.Version+1
		case !errors.Is(err, table.ErrNotFound):
			return err
		}
		err = s.commit(ctx, change{Users: []id.UserID{user}},
			[]table.Op{table.Put(table.Item{PK: k.PK, SK: k.SK, Data: data, Version: version}, cond)})
		if failedOp(err) == 0 {
			continue // a concurrent upload of the same device: look again
		}
		if err == nil {
			s.announceDevices(ctx, user, []id.DeviceID{dev}, false)
		}
		return err
	}
	return table.ErrConflict
}

// addOneTimeKeys stores new one-time keys, one item each, in upload order.
// Keys already stored with the same content are skipped; the same key id
// with different content is refused.
func (s *Service) addOneTimeKeys(ctx context.Context, user id.UserID, dev id.DeviceID, keys []oneTimeKey) error {
	existing, err := s.queryAll(ctx, e2ePK(user), otkPrefix(dev))
	if err != nil {
		return err
	}
	have := make(map[string]string, len(existing))
	for _, it := range existing {
		if alg, kid, ok := splitOTKSK(it.SK); ok {
			have[alg+":"+kid] = string(it.Data)
		}
	}
	var fresh []oneTimeKey
	for _, k := range keys {
		if old, ok := have[k.Name]; ok {
			if old != string(k.Raw) {
				return invalid("one-time key %s is already uploaded with different content", k.Name)
			}
			continue
		}
		fresh = append(fresh, k)
	}
	if len(fresh) == 0 {
		return nil
	}
	if len(existing)+len(fresh) > MaxOneTimeKeys {
		return invalid("a device may keep at most %d one-time keys on the server", MaxOneTimeKeys)
	}
	// One number per upload: keys of one upload are equivalent, and claims
	// take lower numbers first.
	seq, err := s.T.Add(ctx, otkSeqKey(user), 1)
	if err != nil {
		return err
	}
	ops := make([]table.Op, 0, table.MaxTxItems)
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		err := s.T.Transact(ctx, ops)
		ops = ops[:0]
		return err
	}
	for _, k := range fresh {
		sk := otkAlgPrefix(dev, k.Alg) + fmt.Sprintf("%016d", seq) + sep + k.KeyID
		ops = append(ops, table.Put(table.Item{PK: e2ePK(user), SK: sk, Data: k.Raw}, table.IfNotExists()))
		if len(ops) == table.MaxTxItems {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// splitOTKSK parses a one-time key's sort key.
func splitOTKSK(sk string) (alg, keyID string, ok bool) {
	parts := strings.Split(strings.TrimPrefix(sk, "otk#"), sep)
	if len(parts) != 4 {
		return "", "", false
	}
	return parts[1], parts[3], true
}

// fallbackRecord is a stored fallback key.
type fallbackRecord struct {
	KeyID string          `json:"key_id"`
	Key   json.RawMessage `json:"key"`
	Used  bool            `json:"used,omitempty"`
}

// putFallbackKey replaces the device's fallback key for the algorithm (the
// same key again keeps its used flag).
func (s *Service) putFallbackKey(ctx context.Context, user id.UserID, dev id.DeviceID, k oneTimeKey) error {
	key := fbkKey(user, dev, k.Alg)
	for range maxAttempts {
		cond, version := table.IfNotExists(), int64(1)
		rec := fallbackRecord{KeyID: k.KeyID, Key: k.Raw}
		it, err := s.T.Get(ctx, key)
		switch {
		case err == nil:
			var old fallbackRecord
			if json.Unmarshal(it.Data, &old) == nil && old.KeyID == k.KeyID && string(old.Key) == string(k.Raw) {
				return nil
			}
			cond, version = table.IfVersion(it.Version), it.Version+1
		case !errors.Is(err, table.ErrNotFound):
			return err
		}
		data, _ := json.Marshal(rec)
		err = s.T.Put(ctx, table.Item{PK: key.PK, SK: key.SK, Data: data, Version: version}, cond)
		if errors.Is(err, table.ErrConditionFailed) {
			continue
		}
		return err
	}
	return table.ErrConflict
}

// OneTimeKeyCounts returns, per algorithm, how many unclaimed one-time keys
// the device has on the server (signed_curve25519 is always present).
func (s *Service) OneTimeKeyCounts(ctx context.Context, user id.UserID, dev id.DeviceID) (map[string]int, error) {
	items, err := s.queryAll(ctx, e2ePK(user), otkPrefix(dev))
	if err != nil {
		return nil, err
	}
	counts := map[string]int{"signed_curve25519": 0}
	for _, it := range items {
		if alg, _, ok := splitOTKSK(it.SK); ok {
			counts[alg]++
		}
	}
	return counts, nil
}

// UnusedFallbackKeyTypes lists the algorithms for which the device has a
// fallback key that nobody has claimed yet (never nil).
func (s *Service) UnusedFallbackKeyTypes(ctx context.Context, user id.UserID, dev id.DeviceID) ([]string, error) {
	items, err := s.queryAll(ctx, e2ePK(user), fbkPrefix(dev))
	if err != nil {
		return nil, err
	}
	out := []string{}
	for _, it := range items {
		var rec fallbackRecord
		if json.Unmarshal(it.Data, &rec) == nil && !rec.Used {
			out = append(out, strings.TrimPrefix(it.SK, fbkPrefix(dev)))
		}
	}
	return out, nil
}

// ---- /keys/query ----

// QueryResult is the answer of /keys/query.
type QueryResult struct {
	DeviceKeys      map[id.UserID]map[id.DeviceID]json.RawMessage `json:"device_keys"`
	MasterKeys      map[id.UserID]json.RawMessage                 `json:"master_keys"`
	SelfSigningKeys map[id.UserID]json.RawMessage                 `json:"self_signing_keys"`
	UserSigningKeys map[id.UserID]json.RawMessage                 `json:"user_signing_keys"`
	Failures        map[string]any                                `json:"failures"`
}

// Query returns the keys of the listed users' devices (all of a user's
// devices for an empty list), with their cross-signing keys. Remote users'
// keys come from our copy or their servers, each asked at most for timeout;
// a server that does not answer is listed in Failures.
func (s *Service) Query(ctx context.Context, requester id.UserID, want map[id.UserID][]id.DeviceID, timeout time.Duration) (*QueryResult, error) {
	total := 0
	for _, ds := range want {
		total += len(ds)
	}
	if err := checkRequestSize(len(want), total); err != nil {
		return nil, err
	}
	res := newQueryResult()
	// Other servers are asked while local keys are read; their part of
	// the answer is merged at the end.
	remote := newQueryResult()
	remoteDone := make(chan error, 1)
	go func() { remoteDone <- s.queryRemote(ctx, requester, want, timeout, remote) }()
	var local []id.UserID
	for u := range want {
		if s.IsLocal(u) {
			local = append(local, u)
		}
	}
	var mu sync.Mutex
	err := forEach(ctx, local, func(ctx context.Context, u id.UserID) error {
		uk, err := s.userKeys(ctx, requester, u, want[u])
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		res.DeviceKeys[u] = uk.devices
		if uk.master != nil {
			res.MasterKeys[u] = uk.master
		}
		if uk.selfSigning != nil {
			res.SelfSigningKeys[u] = uk.selfSigning
		}
		if uk.userSigning != nil && u == requester {
			res.UserSigningKeys[u] = uk.userSigning
		}
		return nil
	})
	if rerr := <-remoteDone; err == nil {
		err = rerr
	}
	if err != nil {
		return nil, err
	}
	maps.Copy(res.DeviceKeys, remote.DeviceKeys)
	maps.Copy(res.MasterKeys, remote.MasterKeys)
	maps.Copy(res.SelfSigningKeys, remote.SelfSigningKeys)
	maps.Copy(res.Failures, remote.Failures)
	return res, nil
}

func newQueryResult() *QueryResult {
	return &QueryResult{
		DeviceKeys:      map[id.UserID]map[id.DeviceID]json.RawMessage{},
		MasterKeys:      map[id.UserID]json.RawMessage{},
		SelfSigningKeys: map[id.UserID]json.RawMessage{},
		UserSigningKeys: map[id.UserID]json.RawMessage{},
		Failures:        map[string]any{},
	}
}

func checkRequestSize(users, devices int) error {
	if users > MaxQueryUsers {
		return invalid("at most %d users per request", MaxQueryUsers)
	}
	if devices > MaxQueryDevices {
		return invalid("at most %d devices per request", MaxQueryDevices)
	}
	return nil
}

// forEach runs f for every user, a few at a time, and returns the first error.
func forEach(ctx context.Context, users []id.UserID, f func(context.Context, id.UserID) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, parallelism)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for _, u := range users {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := f(ctx, u); err != nil {
				once.Do(func() { first = err; cancel() })
			}
		}()
	}
	wg.Wait()
	return first
}

// userKeysView is one user's keys as a requester may see them.
type userKeysView struct {
	devices                          map[id.DeviceID]json.RawMessage
	master, selfSigning, userSigning json.RawMessage
}

// crossSigning is a user's stored cross-signing keys.
type crossSigning struct {
	keys     map[string]object // usage → key
	versions map[string]int64
}

func (c *crossSigning) pub(usage string) string {
	if c == nil || c.keys[usage] == nil {
		return ""
	}
	p, _ := publicKeyOf(c.keys[usage])
	return p
}

func (s *Service) loadCrossSigning(ctx context.Context, u id.UserID) (*crossSigning, error) {
	usages := []string{UsageMaster, UsageSelfSigning, UsageUserSigning}
	ks := make([]table.Key, len(usages))
	for i, us := range usages {
		ks[i] = xskKey(u, us)
	}
	items, err := s.T.GetMany(ctx, ks)
	if err != nil {
		return nil, err
	}
	c := &crossSigning{keys: map[string]object{}, versions: map[string]int64{}}
	for _, it := range items {
		o, ok := parseObject(it.Data)
		if !ok {
			return nil, internal("cross-signing key %s is corrupt", it.Key())
		}
		usage := strings.TrimPrefix(it.SK, "xsk#")
		c.keys[usage], c.versions[usage] = o, it.Version
	}
	return c, nil
}

// userKeys assembles one local user's keys for requester.
func (s *Service) userKeys(ctx context.Context, requester, u id.UserID, only []id.DeviceID) (*userKeysView, error) {
	local := s.IsLocal(u)
	var names map[id.DeviceID]string
	if local {
		devs, err := s.Accounts.Devices(ctx, u)
		if err != nil {
			return nil, err
		}
		names = make(map[id.DeviceID]string, len(devs))
		for _, d := range devs {
			names[d.ID] = d.DisplayName
		}
	}
	var items []table.Item
	var err error
	if len(only) > 0 {
		ks := make([]table.Key, 0, len(only))
		for _, d := range sortedUniqueDevices(only) {
			ks = append(ks, devKey(u, d))
		}
		if items, err = s.T.GetMany(ctx, ks); err != nil {
			return nil, err
		}
	} else if items, err = s.queryAll(ctx, e2ePK(u), "dev#"); err != nil {
		return nil, err
	}
	sigItems, err := s.queryAll(ctx, e2ePK(u), "sig#")
	if err != nil {
		return nil, err
	}
	xs, err := s.loadCrossSigning(ctx, u)
	if err != nil {
		return nil, err
	}
	deviceSigs := map[id.DeviceID]sigs{}
	masterSigs := sigs{}
	masterPub := xs.pub(UsageMaster)
	for _, it := range sigItems {
		var rec sigRecord
		if json.Unmarshal(it.Data, &rec) != nil {
			continue
		}
		switch {
		case strings.HasPrefix(it.SK, sigDevicePrefix):
			d := deviceOfSK(it.SK)
			if deviceSigs[d] == nil {
				deviceSigs[d] = sigs{}
			}
			addSig(deviceSigs[d], rec)
		case strings.HasPrefix(it.SK, sigMasterPrefix+masterPub+sep) && masterPub != "":
			// Another user's signature on this master key is theirs to see.
			if rec.Signer == u || rec.Signer == requester {
				addSig(masterSigs, rec)
			}
		}
	}
	view := &userKeysView{devices: map[id.DeviceID]json.RawMessage{}}
	for _, it := range items {
		d := deviceOfSK(it.SK)
		o, ok := parseObject(it.Data)
		if !ok {
			continue
		}
		o = o.withSignatures(deviceSigs[d])
		if !local {
			// A copy of a remote device: stored with its display name.
			view.devices[d] = o.encode()
			continue
		}
		name, exists := names[d]
		if !exists {
			continue // the device is gone (its keys are being deleted)
		}
		unsigned := map[string]any{}
		if name != "" {
			unsigned["device_display_name"] = name
		}
		o["unsigned"], _ = json.Marshal(unsigned)
		view.devices[d] = o.encode()
	}
	if m := xs.keys[UsageMaster]; m != nil {
		view.master = m.withSignatures(masterSigs).encode()
	}
	if k := xs.keys[UsageSelfSigning]; k != nil {
		view.selfSigning = k.encode()
	}
	if k := xs.keys[UsageUserSigning]; k != nil {
		view.userSigning = k.encode()
	}
	return view, nil
}

func addSig(m sigs, rec sigRecord) {
	if m[string(rec.Signer)] == nil {
		m[string(rec.Signer)] = map[string]string{}
	}
	m[string(rec.Signer)][rec.KeyID] = rec.Signature
}

func sortedUniqueDevices(ds []id.DeviceID) []id.DeviceID {
	out := slices.Clone(ds)
	slices.Sort(out)
	return slices.Compact(out)
}

// ---- /keys/claim ----

// ClaimResult is the answer of /keys/claim.
type ClaimResult struct {
	OneTimeKeys map[id.UserID]map[id.DeviceID]map[string]json.RawMessage `json:"one_time_keys"`
	Failures    map[string]any                                           `json:"failures"`
}

// Claim hands out one key per requested device and algorithm: a one-time
// key if one is left (each exactly once), else the fallback key.
func (s *Service) Claim(ctx context.Context, want map[id.UserID]map[id.DeviceID]string, timeout time.Duration) (*ClaimResult, error) {
	total := 0
	for _, ds := range want {
		total += len(ds)
	}
	if err := checkRequestSize(len(want), total); err != nil {
		return nil, err
	}
	res := &ClaimResult{OneTimeKeys: map[id.UserID]map[id.DeviceID]map[string]json.RawMessage{}, Failures: map[string]any{}}
	var local []id.UserID
	for u := range want {
		if s.IsLocal(u) {
			local = append(local, u)
		}
	}
	var mu sync.Mutex
	remoteDone := make(chan struct{})
	go func() {
		defer close(remoteDone)
		remote := &ClaimResult{OneTimeKeys: map[id.UserID]map[id.DeviceID]map[string]json.RawMessage{}, Failures: res.Failures}
		s.claimRemote(ctx, want, timeout, remote)
		mu.Lock()
		maps.Copy(res.OneTimeKeys, remote.OneTimeKeys)
		mu.Unlock()
	}()
	err := forEach(ctx, local, func(ctx context.Context, u id.UserID) error {
		for dev, alg := range want[u] {
			name, key, err := s.ClaimKey(ctx, u, dev, alg)
			if err != nil {
				return err
			}
			if key == nil {
				continue
			}
			mu.Lock()
			if res.OneTimeKeys[u] == nil {
				res.OneTimeKeys[u] = map[id.DeviceID]map[string]json.RawMessage{}
			}
			res.OneTimeKeys[u][dev] = map[string]json.RawMessage{name: key}
			mu.Unlock()
		}
		return nil
	})
	<-remoteDone
	if err != nil {
		return nil, err
	}
	return res, nil
}

// ClaimKey takes one key of the algorithm from the device: the oldest
// one-time key, removed with a conditional delete so that no two claims
// ever get the same one; or, when none is left, the fallback key (kept, and
// marked used). It returns a nil key when the device has neither.
func (s *Service) ClaimKey(ctx context.Context, u id.UserID, dev id.DeviceID, alg string) (string, json.RawMessage, error) {
	if badKeyName(alg) || badKeyName(string(dev)) {
		return "", nil, nil
	}
	prefix := otkAlgPrefix(dev, alg)
	for attempt := 0; attempt < 64; attempt++ {
		page, err := s.T.Query(ctx, table.Query{PK: e2ePK(u), Prefix: prefix, Limit: 4})
		if err != nil {
			return "", nil, err
		}
		if len(page.Items) == 0 {
			break
		}
		for _, it := range page.Items {
			err := s.T.Delete(ctx, it.Key(), table.IfExists())
			if errors.Is(err, table.ErrConditionFailed) {
				continue // another claim took this one
			}
			if err != nil {
				return "", nil, err
			}
			_, kid, _ := splitOTKSK(it.SK)
			return alg + ":" + kid, it.Data, nil
		}
	}
	return s.claimFallback(ctx, u, dev, alg)
}

func (s *Service) claimFallback(ctx context.Context, u id.UserID, dev id.DeviceID, alg string) (string, json.RawMessage, error) {
	key := fbkKey(u, dev, alg)
	for range maxAttempts {
		it, err := s.T.Get(ctx, key)
		if errors.Is(err, table.ErrNotFound) {
			return "", nil, nil
		}
		if err != nil {
			return "", nil, err
		}
		var rec fallbackRecord
		if err := json.Unmarshal(it.Data, &rec); err != nil {
			return "", nil, err
		}
		if !rec.Used {
			rec.Used = true
			data, _ := json.Marshal(rec)
			err := s.T.Put(ctx, table.Item{PK: key.PK, SK: key.SK, Data: data, Version: it.Version + 1}, table.IfVersion(it.Version))
			if errors.Is(err, table.ErrConditionFailed) {
				continue // replaced or marked meanwhile: read again
			}
			if err != nil {
				return "", nil, err
			}
		}
		return alg + ":" + rec.KeyID, rec.Key, nil
	}
	return "", nil, table.ErrConflict
}

// DeviceRenamed records that a device's display name changed: the users
// who share a room with u see u in their device-list changes and the
// servers sharing a room get an m.device_list_update with the new name, as
// the display name is part of what /keys/query answers. A device that
// never published keys is in nobody's device list, so nothing is recorded.
func (s *Service) DeviceRenamed(ctx context.Context, u id.UserID, dev id.DeviceID) error {
	if _, err := s.T.Get(ctx, devKey(u, dev)); errors.Is(err, table.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	if err := s.commit(ctx, change{Users: []id.UserID{u}}, nil); err != nil {
		return err
	}
	s.announceDevices(ctx, u, []id.DeviceID{dev}, false)
	return nil
}

// ---- deleting a device's keys ----

// DeleteDeviceKeys removes everything stored for the listed devices (device
// keys, one-time and fallback keys, signatures on them) and records a
// device-list change if any of them had published keys.
func (s *Service) DeleteDeviceKeys(ctx context.Context, u id.UserID, devs []id.DeviceID) error {
	set := make(map[id.DeviceID]bool, len(devs))
	for _, d := range devs {
		set[d] = true
	}
	return s.deleteDevicesWhere(ctx, u, func(d id.DeviceID) bool { return set[d] })
}

// DeleteAllDeviceKeys is DeleteDeviceKeys for every device of the user
// except keep (none if keep is empty).
func (s *Service) DeleteAllDeviceKeys(ctx context.Context, u id.UserID, keep id.DeviceID) error {
	return s.deleteDevicesWhere(ctx, u, func(d id.DeviceID) bool { return d != keep })
}

func (s *Service) deleteDevicesWhere(ctx context.Context, u id.UserID, match func(id.DeviceID) bool) error {
	var doomed []table.Key
	var devices []table.Key
	for _, prefix := range []string{"dev#", "otk#", "fbk#", sigDevicePrefix} {
		items, err := s.queryAll(ctx, e2ePK(u), prefix)
		if err != nil {
			return err
		}
		for _, it := range items {
			if d := deviceOfSK(it.SK); d != "" && match(d) {
				if prefix == "dev#" {
					devices = append(devices, it.Key())
				} else {
					doomed = append(doomed, it.Key())
				}
			}
		}
	}
	// Secondary items go first, the device keys (with the stream entry)
	// last: if anything fails half way, the device still shows as changed
	// once the deletion is retried.
	for len(doomed) > 0 {
		n := min(len(doomed), table.MaxTxItems)
		ops := make([]table.Op, n)
		for i, k := range doomed[:n] {
			ops[i] = table.Delete(k, table.Cond{})
		}
		if err := s.T.Transact(ctx, ops); err != nil {
			return err
		}
		doomed = doomed[n:]
	}
	for len(devices) > 0 {
		n := min(len(devices), table.MaxTxItems-1)
		ops := make([]table.Op, n)
		for i, k := range devices[:n] {
			ops[i] = table.Delete(k, table.Cond{})
		}
		if err := s.commit(ctx, change{Users: []id.UserID{u}}, ops); err != nil {
			return err
		}
		gone := make([]id.DeviceID, n)
		for i, k := range devices[:n] {
			gone[i] = deviceOfSK(k.SK)
		}
		s.announceDevices(ctx, u, gone, true)
		devices = devices[n:]
	}
	return nil
}
