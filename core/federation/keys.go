package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/signutil"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/signing"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// KeyStore keeps other servers' signing keys and server-name resolutions in
// the table. It is the mautrix KeyCache (request authentication fetches
// through it) and ResolutionCache (outbound requests).
//
//	skey#<server> / response   the last key response (raw, self-signed); ttl = valid_until_ts
//	skey#<server> / <key id>   one verify key (or old verify key); ttl = validity + a week
//	skey#<server> / error      the last fetch failure (count, time) for backoff; ttl 1 h
//	skey#<server> / requery    set when we re-fetched for an unknown key id; ttl 1 min
//	resolve#<server> / resolve the resolved address; ttl = its expiry
type KeyStore struct {
	T   table.Table
	Now func() time.Time
}

var (
	_ mfed.KeyCache        = (*KeyStore)(nil)
	_ mfed.ResolutionCache = (*KeyStore)(nil)
)

func skeyPK(server string) string { return "skey#" + server }

// keysForKey carries, in a context, the server whose keys are being fetched.
type keysForKey struct{}

func withKeysFor(ctx context.Context, server string) context.Context {
	return context.WithValue(ctx, keysForKey{}, server)
}

// keyRecord is one stored verify key.
type keyRecord struct {
	Key        id.SigningKey `json:"key"`
	ValidUntil int64         `json:"valid_until_ts"`
	ExpiredTS  int64         `json:"expired_ts,omitempty"`
}

// keyRetention keeps keys past their validity, for checking old events.
const keyRetention = 7 * 24 * time.Hour

func (k *KeyStore) now() time.Time {
	if k.Now != nil {
		return k.Now()
	}
	return time.Now()
}

// StoreKeys implements mfed.KeyCache.
func (k *KeyStore) StoreKeys(ctx context.Context, resp *mfed.ServerKeyResponse) error {
	if resp == nil || resp.ServerName == "" || len(resp.Raw) == 0 {
		return errors.New("federation: empty key response")
	}
	// A server answering for another name must not plant keys for it.
	if want, ok := ctx.Value(keysForKey{}).(string); ok && want != resp.ServerName {
		return fmt.Errorf("federation: asked %s for its keys, got keys for %s", want, resp.ServerName)
	}
	if err := checkKeyResponse(resp.ServerName, resp); err != nil {
		return err
	}
	now := k.now()
	valid := resp.ValidUntilTS.Time
	// Responses are cached for at most a week, and at least a minute.
	ttl := earliest(latest(valid, now.Add(time.Minute)), now.Add(7*24*time.Hour))
	pk := skeyPK(resp.ServerName)
	ops := []table.Op{
		table.Put(table.Item{PK: pk, SK: "response", Data: resp.Raw, TTL: ttl.Unix()}, table.Cond{}),
		table.Delete(table.Key{PK: pk, SK: "error"}, table.Cond{}),
	}
	for kid, vk := range resp.VerifyKeys {
		d, _ := json.Marshal(keyRecord{Key: vk.Key, ValidUntil: valid.UnixMilli()})
		ops = append(ops, table.Put(table.Item{PK: pk, SK: string(kid), Data: d, TTL: valid.Add(keyRetention).Unix()}, table.Cond{}))
	}
	for kid, ok := range resp.OldVerifyKeys {
		if _, dup := resp.VerifyKeys[kid]; dup {
			continue
		}
		d, _ := json.Marshal(keyRecord{Key: ok.Key, ValidUntil: ok.ExpiredTS.UnixMilli(), ExpiredTS: ok.ExpiredTS.UnixMilli()})
		ops = append(ops, table.Put(table.Item{PK: pk, SK: string(kid), Data: d, TTL: latest(ok.ExpiredTS.Time, now).Add(keyRetention).Unix()}, table.Cond{}))
	}
	if len(ops) > table.MaxTxItems {
		ops = ops[:table.MaxTxItems]
	}
	return k.T.Transact(ctx, ops)
}

type fetchError struct {
	Count int    `json:"count"`
	At    int64  `json:"at"`
	Err   string `json:"err"`
}

// StoreFetchError implements mfed.KeyCache.
func (k *KeyStore) StoreFetchError(ctx context.Context, server string, ferr error) error {
	key := table.Key{PK: skeyPK(server), SK: "error"}
	var fe fetchError
	if it, err := k.T.Get(ctx, key); err == nil {
		_ = json.Unmarshal(it.Data, &fe)
	}
	fe.Count++
	fe.At = k.now().UnixMilli()
	fe.Err = ferr.Error()
	d, _ := json.Marshal(fe)
	// A failed re-fetch gives its ration back (the failure's own backoff
	// bounds the retries): a server caught restarting, say just after a
	// key rotation, is asked again soon rather than in a minute.
	return k.T.Transact(ctx, []table.Op{
		table.Put(table.Item{PK: key.PK, SK: key.SK, Data: d, TTL: k.now().Add(time.Hour).Unix()}, table.Cond{}),
		table.Delete(table.Key{PK: key.PK, SK: "requery"}, table.Cond{}),
	})
}

// LoadKeys implements mfed.KeyCache.
func (k *KeyStore) LoadKeys(ctx context.Context, server string, maxBackoff time.Duration) (*mfed.ServerKeyResponse, error) {
	items, err := k.T.GetMany(ctx, []table.Key{{PK: skeyPK(server), SK: "response"}, {PK: skeyPK(server), SK: "error"}})
	if err != nil {
		return nil, err
	}
	// A cached response is returned whatever failed since: a fetch
	// failure only delays the next fetch (whatever order the items came in).
	for _, it := range items {
		if it.SK == "response" {
			var resp mfed.ServerKeyResponse
			if err := json.Unmarshal(it.Data, &resp); err != nil {
				return nil, err
			}
			return &resp, nil
		}
	}
	for _, it := range items {
		switch it.SK {
		case "error":
			var fe fetchError
			_ = json.Unmarshal(it.Data, &fe)
			if maxBackoff < 0 {
				continue
			}
			wait := min(time.Duration(math.Exp(float64(min(fe.Count, 10))))*time.Second, maxBackoff)
			if since := k.now().Sub(time.UnixMilli(fe.At)); since < wait {
				return nil, fmt.Errorf("%w (%d failures, last %s ago: %s)", mfed.ErrRecentKeyQueryFailed, fe.Count, since.Round(time.Second), fe.Err)
			}
		}
	}
	return nil, nil
}

// RecentFailure returns mfed.ErrRecentKeyQueryFailed (wrapped) while the
// backoff after the last failed fetch of a server's keys runs.
func (k *KeyStore) RecentFailure(ctx context.Context, server string, maxBackoff time.Duration) error {
	it, err := k.T.Get(ctx, table.Key{PK: skeyPK(server), SK: "error"})
	if errors.Is(err, table.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	var fe fetchError
	_ = json.Unmarshal(it.Data, &fe)
	wait := min(time.Duration(math.Exp(float64(min(fe.Count, 10))))*time.Second, maxBackoff)
	if since := k.now().Sub(time.UnixMilli(fe.At)); since < wait {
		return fmt.Errorf("%w (%d failures, last %s ago: %s)", mfed.ErrRecentKeyQueryFailed, fe.Count, since.Round(time.Second), fe.Err)
	}
	return nil
}

// ShouldReQuery implements mfed.KeyCache: at most one re-fetch a minute
// for key ids the cached response lacks.
func (k *KeyStore) ShouldReQuery(ctx context.Context, server string) (bool, error) {
	err := k.T.Put(ctx, table.Item{PK: skeyPK(server), SK: "requery", TTL: k.now().Add(time.Minute).Unix()}, table.IfNotExists())
	if errors.Is(err, table.ErrConditionFailed) {
		return false, nil
	}
	return err == nil, err
}

// VerifyKey returns a stored key of a server and until when it is valid.
func (k *KeyStore) VerifyKey(ctx context.Context, server string, kid id.KeyID) (id.SigningKey, time.Time, bool, error) {
	it, err := k.T.Get(ctx, table.Key{PK: skeyPK(server), SK: string(kid)})
	if errors.Is(err, table.ErrNotFound) {
		return "", time.Time{}, false, nil
	}
	if err != nil {
		return "", time.Time{}, false, err
	}
	var rec keyRecord
	if err := json.Unmarshal(it.Data, &rec); err != nil {
		return "", time.Time{}, false, err
	}
	return rec.Key, time.UnixMilli(rec.ValidUntil), true, nil
}

// StoreResolution implements mfed.ResolutionCache.
func (k *KeyStore) StoreResolution(ctx context.Context, r *mfed.ResolvedServerName) error {
	d, _ := json.Marshal(r)
	exp := earliest(r.Expires, k.now().Add(48*time.Hour))
	return k.T.Put(ctx, table.Item{PK: "resolve#" + r.ServerName, SK: "resolve", Data: d, TTL: exp.Unix()}, table.Cond{})
}

// LoadResolution implements mfed.ResolutionCache.
func (k *KeyStore) LoadResolution(ctx context.Context, server string) (*mfed.ResolvedServerName, error) {
	it, err := k.T.Get(ctx, table.Key{PK: "resolve#" + server, SK: "resolve"})
	if errors.Is(err, table.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r mfed.ResolvedServerName
	if err := json.Unmarshal(it.Data, &r); err != nil {
		return nil, err
	}
	if r.Expires.Before(k.now()) {
		return nil, nil
	}
	return &r, nil
}

// keyValidity is how long our published key response is valid for.
const keyValidity = 24 * time.Hour

// OwnKeys builds this server's signed key response (GET /_matrix/key/v2/server).
func OwnKeys(serverName string, key *signing.Key, now time.Time) (json.RawMessage, error) {
	return OwnKeysWithOld(serverName, key, nil, now)
}

// OldKey is one of our retired verify keys: events and requests signed
// with it before ExpiredTS still verify.
type OldKey struct {
	Key       id.SigningKey `json:"key"`
	ExpiredTS int64         `json:"expired_ts"`
}

// OwnKeysWithOld is OwnKeys listing our retired keys in old_verify_keys.
func OwnKeysWithOld(serverName string, key *signing.Key, old map[id.KeyID]OldKey, now time.Time) (json.RawMessage, error) {
	oldKeys := map[id.KeyID]OldKey{}
	for kid, k := range old {
		if kid != key.ID {
			oldKeys[kid] = k
		}
	}
	body := map[string]any{
		"server_name":     serverName,
		"valid_until_ts":  now.Add(keyValidity).UnixMilli(),
		"verify_keys":     map[id.KeyID]map[string]id.SigningKey{key.ID: {"key": key.Pub}},
		"old_verify_keys": oldKeys,
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	return addSignature(raw, serverName, key)
}

// addSignature signs a JSON object and adds the signature to its
// signatures (keeping the ones there).
func addSignature(raw json.RawMessage, serverName string, key *signing.Key) (json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	sigs := map[string]map[id.KeyID]string{}
	if s, ok := obj["signatures"]; ok {
		_ = json.Unmarshal(s, &sigs)
	}
	delete(obj, "unsigned")
	sig, err := key.SignJSON(obj) // SignJSON leaves out "signatures"
	if err != nil {
		return nil, err
	}
	if sigs[serverName] == nil {
		sigs[serverName] = map[id.KeyID]string{}
	}
	sigs[serverName][key.ID] = sig
	obj["signatures"], _ = json.Marshal(sigs)
	return json.Marshal(obj)
}

// checkKeyResponse verifies a fetched key response: the server it claims
// and its self-signatures.
func checkKeyResponse(server string, resp *mfed.ServerKeyResponse) error {
	if resp.ServerName != server {
		return fmt.Errorf("key response for %q names %q", server, resp.ServerName)
	}
	if len(resp.VerifyKeys) == 0 {
		return fmt.Errorf("key response of %s has no verify keys", server)
	}
	for kid, vk := range resp.VerifyKeys {
		if err := signutil.VerifyJSON(server, kid, vk.Key, resp.Raw); err != nil {
			return fmt.Errorf("key response of %s: self-signature of %s: %w", server, kid, err)
		}
	}
	return nil
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Our retired signing keys live in the table beside the current one:
//
//	server / oldkey#<key id>   d = {key, expired_ts}; written once (IfNotExists)
const oldKeyPrefix = "oldkey#"

// OwnOldKeys lists this server's retired verify keys.
func OwnOldKeys(ctx context.Context, t table.Table) (map[id.KeyID]OldKey, error) {
	out := map[id.KeyID]OldKey{}
	q := table.Query{PK: "server", Prefix: oldKeyPrefix}
	for {
		page, err := t.Query(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, it := range page.Items {
			var k OldKey
			if err := json.Unmarshal(it.Data, &k); err != nil {
				return nil, err
			}
			out[id.KeyID(it.SK[len(oldKeyPrefix):])] = k
		}
		if page.Next == "" {
			return out, nil
		}
		q.Cursor = page.Next
	}
}

// ownOldKey returns one retired key of ours (ok false if there is none).
func ownOldKey(ctx context.Context, t table.Table, kid id.KeyID) (OldKey, bool, error) {
	it, err := t.Get(ctx, table.Key{PK: "server", SK: oldKeyPrefix + string(kid)})
	if errors.Is(err, table.ErrNotFound) {
		return OldKey{}, false, nil
	}
	if err != nil {
		return OldKey{}, false, err
	}
	var k OldKey
	err = json.Unmarshal(it.Data, &k)
	return k, err == nil, err
}

// RotateKey replaces the server's signing key with a new one: cur is
// recorded first as an old verify key expiring now (so what it signed
// keeps verifying, here and on servers that fetch our keys later), then
// the store's key is replaced. When another process rotated cur first,
// the key it stored is returned instead. The store must be a
// signing.Replacer.
func RotateKey(ctx context.Context, t table.Table, store signing.Store, cur *signing.Key, now time.Time) (*signing.Key, error) {
	rep, ok := store.(signing.Replacer)
	if !ok {
		return nil, errors.New("federation: this key store cannot replace its key")
	}
	d, _ := json.Marshal(OldKey{Key: cur.Pub, ExpiredTS: now.UnixMilli()})
	err := t.Put(ctx, table.Item{PK: "server", SK: oldKeyPrefix + string(cur.ID), Data: d}, table.IfNotExists())
	if err != nil && !errors.Is(err, table.ErrConditionFailed) {
		return nil, err
	}
	next, err := signing.Generate()
	if err != nil {
		return nil, err
	}
	err = rep.Replace(ctx, cur.SynapseString(), next.SynapseString())
	if errors.Is(err, signing.ErrChanged) {
		return signing.LoadOrCreate(ctx, store)
	}
	if err != nil {
		return nil, err
	}
	return next, nil
}
