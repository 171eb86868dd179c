package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"slices"
	"sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/crypto/goolm/account"
	"maunium.net/go/mautrix/crypto/signatures"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

const keysPath = "/_matrix/client/v3/keys/"

// olmDevice is a logged-in device with a real (pure Go) olm account: what
// an E2EE client keeps on its side.
type olmDevice struct {
	c     *mautrix.Client
	acc   *account.Account
	ed    id.Ed25519
	curve id.Curve25519
}

func newOlmDevice(t *testing.T, c *mautrix.Client) *olmDevice {
	t.Helper()
	acc, err := account.NewAccount()
	if err != nil {
		t.Fatal(err)
	}
	ed, curve, err := acc.IdentityKeys()
	if err != nil {
		t.Fatal(err)
	}
	return &olmDevice{c: c, acc: acc, ed: ed, curve: curve}
}

// canonicalSigned is obj's canonical JSON without signatures and unsigned.
func canonicalSigned(t *testing.T, obj map[string]any) []byte {
	t.Helper()
	plain := map[string]any{}
	for k, v := range obj {
		if k != "signatures" && k != "unsigned" {
			plain[k] = v
		}
	}
	b, err := canonicaljson.Marshal(plain)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// addSignature puts a signature by user's key keyID into obj.
func addSignature(obj map[string]any, user id.UserID, keyID, sig string) map[string]any {
	all, _ := obj["signatures"].(map[string]any)
	if all == nil {
		all = map[string]any{}
	}
	mine, _ := all[string(user)].(map[string]any)
	if mine == nil {
		mine = map[string]any{}
	}
	mine[keyID] = sig
	all[string(user)] = mine
	obj["signatures"] = all
	return obj
}

// sign signs obj with the device's ed25519 identity key.
func (d *olmDevice) sign(t *testing.T, obj map[string]any) map[string]any {
	t.Helper()
	sig, err := d.acc.Sign(canonicalSigned(t, obj))
	if err != nil {
		t.Fatal(err)
	}
	return addSignature(obj, d.c.UserID, "ed25519:"+string(d.c.DeviceID), string(sig))
}

func (d *olmDevice) deviceKeys(t *testing.T) map[string]any {
	return d.sign(t, map[string]any{
		"user_id":    d.c.UserID,
		"device_id":  d.c.DeviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys": map[string]any{
			"ed25519:" + string(d.c.DeviceID):    d.ed,
			"curve25519:" + string(d.c.DeviceID): d.curve,
		},
	})
}

// oneTimeKeys makes n new signed one-time keys (and a fallback key).
func (d *olmDevice) oneTimeKeys(t *testing.T, n int, fallback bool) (otks, fbks map[string]any) {
	t.Helper()
	if err := d.acc.GenOneTimeKeys(uint(n)); err != nil {
		t.Fatal(err)
	}
	keys, _ := d.acc.OneTimeKeys()
	otks = map[string]any{}
	for kid, key := range keys {
		otks["signed_curve25519:"+kid] = d.sign(t, map[string]any{"key": key})
	}
	fbks = map[string]any{}
	if fallback {
		if err := d.acc.GenFallbackKey(); err != nil {
			t.Fatal(err)
		}
		for kid, key := range d.acc.FallbackKeyUnpublished() {
			fbks["signed_curve25519:"+kid] = d.sign(t, map[string]any{"key": key, "fallback": true})
		}
	}
	d.acc.MarkKeysAsPublished()
	return otks, fbks
}

// upload publishes the device keys with n one-time keys and a fallback key
// and returns the signed_curve25519 count the server reports.
func (d *olmDevice) upload(t *testing.T, env *testenv.Env, n int, fallback bool) int {
	t.Helper()
	otks, fbks := d.oneTimeKeys(t, n, fallback)
	st, body := doJSON(t, env, "POST", keysPath+"upload", d.c.AccessToken,
		map[string]any{"device_keys": d.deviceKeys(t), "one_time_keys": otks, "fallback_keys": fbks})
	if st != 200 {
		t.Fatalf("upload: %d %v", st, body)
	}
	counts, _ := body["one_time_key_counts"].(map[string]any)
	c, _ := counts["signed_curve25519"].(float64)
	return int(c)
}

// xsKey is a cross-signing key pair.
type xsKey struct {
	pub  string
	priv ed25519.PrivateKey
}

func newXSKey(t *testing.T) *xsKey {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &xsKey{pub: base64.RawStdEncoding.EncodeToString(pub), priv: priv}
}

func (k *xsKey) sign(t *testing.T, user id.UserID, obj map[string]any) map[string]any {
	sig := base64.RawStdEncoding.EncodeToString(ed25519.Sign(k.priv, canonicalSigned(t, obj)))
	return addSignature(obj, user, "ed25519:"+k.pub, sig)
}

func (k *xsKey) object(user id.UserID, usage string) map[string]any {
	return map[string]any{"user_id": user, "usage": []string{usage}, "keys": map[string]any{"ed25519:" + k.pub: k.pub}}
}

// crossSigning is a user's three cross-signing keys.
type crossSigning struct {
	master, self, user *xsKey
}

func newCrossSigning(t *testing.T) *crossSigning {
	return &crossSigning{master: newXSKey(t), self: newXSKey(t), user: newXSKey(t)}
}

func (cs *crossSigning) body(t *testing.T, u id.UserID) map[string]any {
	return map[string]any{
		"master_key":       cs.master.object(u, "master"),
		"self_signing_key": cs.master.sign(t, u, cs.self.object(u, "self_signing")),
		"user_signing_key": cs.master.sign(t, u, cs.user.object(u, "user_signing")),
	}
}

// queryKeys is POST /keys/query decoded with mautrix's types.
func queryKeys(t *testing.T, c *mautrix.Client, users ...id.UserID) *mautrix.RespQueryKeys {
	t.Helper()
	req := &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{}}
	for _, u := range users {
		req.DeviceKeys[u] = mautrix.DeviceIDList{}
	}
	resp, err := c.QueryKeys(context.Background(), req)
	if err != nil {
		t.Fatalf("query keys: %v", err)
	}
	return resp
}

func TestKeysUploadQueryClaim(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := newOlmDevice(t, register(t, env, "alice", "pw"))
		bob := register(t, env, "bob", "pw")
		if n := alice.upload(t, env, 5, true); n != 5 {
			t.Fatalf("one-time key count %d, want 5", n)
		}
		// The same device keys again are fine, and change nothing.
		st, body := doJSON(t, env, "POST", keysPath+"upload", alice.c.AccessToken, map[string]any{"device_keys": alice.deviceKeys(t)})
		if st != 200 || body["one_time_key_counts"].(map[string]any)["signed_curve25519"] != 5.0 {
			t.Fatalf("re-upload: %d %v", st, body)
		}

		resp := queryKeys(t, bob, alice.c.UserID, "@nobody:cirrus.test", "@someone:remote.example")
		dk, ok := resp.DeviceKeys[alice.c.UserID][alice.c.DeviceID]
		if !ok {
			t.Fatalf("alice's device missing from %+v", resp.DeviceKeys)
		}
		if dk.Keys.GetEd25519(alice.c.DeviceID) != alice.ed || dk.Keys.GetCurve25519(alice.c.DeviceID) != alice.curve {
			t.Fatalf("identity keys %+v", dk.Keys)
		}
		if dk.Unsigned["device_display_name"] != "e2e" {
			t.Fatalf("unsigned %v", dk.Unsigned)
		}
		raw, _ := json.Marshal(dk)
		if ok, err := signatures.VerifySignatureJSON(json.RawMessage(raw), alice.c.UserID, string(alice.c.DeviceID), alice.ed); !ok || err != nil {
			t.Fatalf("device keys as served do not verify: %v %s", err, raw)
		}
		if len(resp.DeviceKeys["@nobody:cirrus.test"]) != 0 {
			t.Fatalf("unknown user: %v", resp.DeviceKeys["@nobody:cirrus.test"])
		}
		if resp.Failures["remote.example"] == nil {
			t.Fatalf("no failure for the remote server: %v", resp.Failures)
		}
		// Only the listed devices.
		resp, err := bob.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{alice.c.UserID: {"NOSUCHDEVICE"}}})
		if err != nil || len(resp.DeviceKeys[alice.c.UserID]) != 0 {
			t.Fatalf("query of an unknown device: %+v %v", resp, err)
		}

		// Claims hand out the five one-time keys, then the fallback key.
		claim := func() (id.KeyID, mautrix.OneTimeKey) {
			t.Helper()
			resp, err := bob.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{
				alice.c.UserID: {alice.c.DeviceID: id.KeyAlgorithmSignedCurve25519}}})
			if err != nil {
				t.Fatal(err)
			}
			for kid, k := range resp.OneTimeKeys[alice.c.UserID][alice.c.DeviceID] {
				if ok, err := signatures.VerifySignatureJSON(k.RawData, alice.c.UserID, string(alice.c.DeviceID), alice.ed); !ok || err != nil {
					t.Fatalf("claimed key %s does not verify: %v", kid, err)
				}
				return kid, k
			}
			t.Fatalf("no key claimed: %+v", resp)
			return "", mautrix.OneTimeKey{}
		}
		seen := map[id.KeyID]bool{}
		for range 5 {
			kid, k := claim()
			if seen[kid] || k.Fallback {
				t.Fatalf("key %s twice, or a fallback key too early", kid)
			}
			seen[kid] = true
		}
		fb1, k1 := claim()
		fb2, _ := claim()
		if fb1 != fb2 || !k1.Fallback || seen[fb1] {
			t.Fatalf("fallback claims %s %s %+v", fb1, fb2, k1)
		}
		counts, err := alice.c.UploadKeys(ctx, &mautrix.ReqUploadKeys{})
		if err != nil || counts.OneTimeKeyCounts.SignedCurve25519 != 0 {
			t.Fatalf("counts after claims: %+v %v", counts, err)
		}
		// Unknown devices and users have nothing; remote users are a failure.
		cr, err := bob.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{
			alice.c.UserID:            {"NOSUCHDEVICE": id.KeyAlgorithmSignedCurve25519},
			"@someone:remote.example": {"X": id.KeyAlgorithmSignedCurve25519}}})
		if err != nil || len(cr.OneTimeKeys[alice.c.UserID]) != 0 || cr.Failures["remote.example"] == nil {
			t.Fatalf("claim unknown: %+v %v", cr, err)
		}
	})
}

// TestConcurrentClaimsOverHTTP races claims for one device's keys through
// the whole server: every one-time key is handed out exactly once.
func TestConcurrentClaimsOverHTTP(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		alice := newOlmDevice(t, register(t, env, "alice", "pw"))
		bob := register(t, env, "bob", "pw")
		const n, claimers = 10, 24
		if got := alice.upload(t, env, n, true); got != n {
			t.Fatalf("count %d", got)
		}
		var mu sync.Mutex
		got := map[string]int{}
		var wg sync.WaitGroup
		for range claimers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, body := doJSON(t, env, "POST", keysPath+"claim", bob.AccessToken,
					map[string]any{"one_time_keys": map[string]any{string(alice.c.UserID): map[string]any{string(alice.c.DeviceID): "signed_curve25519"}}})
				if st != 200 {
					t.Errorf("claim: %d %v", st, body)
					return
				}
				keys, _ := body["one_time_keys"].(map[string]any)[string(alice.c.UserID)].(map[string]any)[string(alice.c.DeviceID)].(map[string]any)
				mu.Lock()
				defer mu.Unlock()
				for kid := range keys {
					got[kid]++
				}
			}()
		}
		wg.Wait()
		once, fallback := 0, 0
		for _, c := range got {
			switch {
			case c == 1:
				once++
			case c == claimers-n:
				fallback++
			default:
				t.Errorf("a key was handed out %d times: %v", c, got)
			}
		}
		if once != n || fallback != 1 {
			t.Fatalf("want %d one-time keys once each and the fallback key %d times: %v", n, claimers-n, got)
		}
	})
}

func TestKeysBadInput(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		alice := newOlmDevice(t, register(t, env, "alice", "pw"))
		bob := newOlmDevice(t, register(t, env, "bob", "pw"))
		tok := alice.c.AccessToken
		if n := alice.upload(t, env, 1, false); n != 1 {
			t.Fatalf("count %d", n)
		}
		withDK := func(change func(dk map[string]any)) map[string]any {
			dk := alice.deviceKeys(t)
			change(dk)
			return map[string]any{"device_keys": dk}
		}
		resigned := func(change func(dk map[string]any)) map[string]any {
			dk := alice.deviceKeys(t)
			delete(dk, "signatures")
			change(dk)
			return map[string]any{"device_keys": alice.sign(t, dk)}
		}
		other := newOlmDevice(t, alice.c) // same device id, new identity
		badOTK := alice.sign(t, map[string]any{"key": "abc"})
		badOTK["key"] = "tampered"
		cs := newCrossSigning(t)
		u := alice.c.UserID
		stranger := newXSKey(t)
		cases := []struct {
			name, method, path string
			body               any
			status             int
			code               string
		}{
			{"wrong user in device keys", "POST", keysPath + "upload", resigned(func(dk map[string]any) { dk["user_id"] = bob.c.UserID }), 400, "M_INVALID_PARAM"},
			{"wrong device in device keys", "POST", keysPath + "upload", resigned(func(dk map[string]any) { dk["device_id"] = "OTHER" }), 400, "M_INVALID_PARAM"},
			{"device keys tampered after signing", "POST", keysPath + "upload", withDK(func(dk map[string]any) { dk["algorithms"] = []string{"m.olm.v1.curve25519-aes-sha2"} }), 400, "M_INVALID_SIGNATURE"},
			{"device keys without signature", "POST", keysPath + "upload", withDK(func(dk map[string]any) { delete(dk, "signatures") }), 400, "M_INVALID_SIGNATURE"},
			{"device keys signed by someone else", "POST", keysPath + "upload", map[string]any{"device_keys": bob.deviceKeys(t)}, 400, "M_INVALID_PARAM"},
			{"device keys without keys", "POST", keysPath + "upload", resigned(func(dk map[string]any) { delete(dk, "keys") }), 400, "M_MISSING_PARAM"},
			{"device keys without algorithms", "POST", keysPath + "upload", resigned(func(dk map[string]any) { delete(dk, "algorithms") }), 400, "M_MISSING_PARAM"},
			{"device keys without user", "POST", keysPath + "upload", resigned(func(dk map[string]any) { delete(dk, "user_id") }), 400, "M_MISSING_PARAM"},
			{"device keys not an object", "POST", keysPath + "upload", map[string]any{"device_keys": "x"}, 400, "M_BAD_JSON"},
			{"changed identity keys", "POST", keysPath + "upload", map[string]any{"device_keys": other.deviceKeys(t)}, 400, "M_INVALID_PARAM"},
			{"one-time keys not an object", "POST", keysPath + "upload", map[string]any{"one_time_keys": []int{1}}, 400, "M_BAD_JSON"},
			{"one-time key with a bad signature", "POST", keysPath + "upload", map[string]any{"one_time_keys": map[string]any{"signed_curve25519:X1": badOTK}}, 400, "M_INVALID_SIGNATURE"},
			{"one-time key without key", "POST", keysPath + "upload", map[string]any{"one_time_keys": map[string]any{"signed_curve25519:X2": map[string]any{}}}, 400, "M_MISSING_PARAM"},
			{"one-time key name without algorithm", "POST", keysPath + "upload", map[string]any{"one_time_keys": map[string]any{"X3": "abc"}}, 400, "M_INVALID_PARAM"},
			{"unsigned signed_ key", "POST", keysPath + "upload", map[string]any{"one_time_keys": map[string]any{"signed_curve25519:X4": "abc"}}, 400, "M_INVALID_PARAM"},
			{"two fallback keys of one algorithm", "POST", keysPath + "upload", map[string]any{"fallback_keys": map[string]any{
				"signed_curve25519:F1": alice.sign(t, map[string]any{"key": "a", "fallback": true}),
				"signed_curve25519:F2": alice.sign(t, map[string]any{"key": "b", "fallback": true})}}, 400, "M_INVALID_PARAM"},
			{"query without device_keys", "POST", keysPath + "query", map[string]any{}, 400, "M_MISSING_PARAM"},
			{"query with a bad user id", "POST", keysPath + "query", map[string]any{"device_keys": map[string]any{"alice": []string{}}}, 400, "M_INVALID_PARAM"},
			{"query with a bad device list", "POST", keysPath + "query", map[string]any{"device_keys": map[string]any{string(u): "all"}}, 400, "M_BAD_JSON"},
			{"claim without one_time_keys", "POST", keysPath + "claim", map[string]any{"timeout": 10}, 400, "M_MISSING_PARAM"},
			{"claim with a bad user id", "POST", keysPath + "claim", map[string]any{"one_time_keys": map[string]any{"x": map[string]any{}}}, 400, "M_INVALID_PARAM"},
			{"changes without from", "GET", keysPath + "changes?to=d1", nil, 400, "M_MISSING_PARAM"},
			{"changes with a foreign token", "GET", keysPath + "changes?from=abc&to=d1", nil, 400, "M_INVALID_PARAM"},
			{"self-signing key not signed by the master key", "POST", keysPath + "device_signing/upload", map[string]any{
				"master_key": cs.master.object(u, "master"), "self_signing_key": stranger.sign(t, u, cs.self.object(u, "self_signing"))}, 400, "M_INVALID_SIGNATURE"},
			{"self-signing key without any master key", "POST", keysPath + "device_signing/upload", map[string]any{
				"self_signing_key": cs.master.sign(t, u, cs.self.object(u, "self_signing"))}, 400, "M_MISSING_PARAM"},
			{"master key with the wrong usage", "POST", keysPath + "device_signing/upload", map[string]any{"master_key": cs.master.object(u, "self_signing")}, 400, "M_INVALID_PARAM"},
			{"master key of another user", "POST", keysPath + "device_signing/upload", map[string]any{"master_key": cs.master.object(bob.c.UserID, "master")}, 400, "M_INVALID_PARAM"},
			{"master key with two keys", "POST", keysPath + "device_signing/upload", map[string]any{"master_key": map[string]any{
				"user_id": u, "usage": []string{"master"}, "keys": map[string]any{"ed25519:" + cs.master.pub: cs.master.pub, "ed25519:" + cs.self.pub: cs.self.pub}}}, 400, "M_INVALID_PARAM"},
			{"master key named wrongly", "POST", keysPath + "device_signing/upload", map[string]any{"master_key": map[string]any{
				"user_id": u, "usage": []string{"master"}, "keys": map[string]any{"ed25519:abc": cs.master.pub}}}, 400, "M_INVALID_PARAM"},
			{"signatures body not an object", "POST", keysPath + "signatures/upload", []int{1}, 400, "M_NOT_JSON"},
			{"signatures with a bad user id", "POST", keysPath + "signatures/upload", map[string]any{"bob": map[string]any{}}, 400, "M_INVALID_PARAM"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				var body string
				if tc.body != nil {
					body = mustMarshal(t, tc.body)
				}
				st, resp, _ := do(t, env, tc.method, tc.path, tok, body)
				if st != tc.status || resp["errcode"] != tc.code {
					t.Fatalf("got %d %v, want %d %s", st, resp, tc.status, tc.code)
				}
			})
		}
		// Nothing above changed alice's keys.
		resp := queryKeys(t, bob.c, u)
		if dk := resp.DeviceKeys[u][alice.c.DeviceID]; dk.Keys.GetEd25519(alice.c.DeviceID) != alice.ed || len(resp.MasterKeys) != 0 {
			t.Fatalf("keys after bad uploads: %+v", resp)
		}
		for _, p := range []string{"upload", "query", "claim", "changes?from=d0&to=d0", "device_signing/upload", "signatures/upload"} {
			method := "POST"
			if p[0] == 'c' && p[1] == 'h' {
				method = "GET"
			}
			if st, resp, _ := do(t, env, method, keysPath+p, "", "{}"); st != 401 || resp["errcode"] != "M_MISSING_TOKEN" {
				t.Fatalf("%s without a token: %d %v", p, st, resp)
			}
		}
	})
}

func TestCrossSigning(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		alice := newOlmDevice(t, register(t, env, "alice", "pw"))
		bob := newOlmDevice(t, register(t, env, "bob", "bobpw"))
		carol := register(t, env, "carol", "pw")
		alice.upload(t, env, 2, false)
		bob.upload(t, env, 2, false)
		a, b := alice.c.UserID, bob.c.UserID
		acs, bcs := newCrossSigning(t), newCrossSigning(t)
		up := keysPath + "device_signing/upload"

		// The first upload needs no password; the same keys again neither.
		for i := range 2 {
			if st, body := doJSON(t, env, "POST", up, alice.c.AccessToken, acs.body(t, a)); st != 200 {
				t.Fatalf("upload %d: %d %v", i, st, body)
			}
		}
		if st, body := doJSON(t, env, "POST", up, bob.c.AccessToken, bcs.body(t, b)); st != 200 {
			t.Fatalf("bob's upload: %d %v", st, body)
		}
		// Replacing them takes the password.
		acs2 := newCrossSigning(t)
		session := uiaSession(t, env, "POST", up, alice.c.AccessToken, mustMarshal(t, acs2.body(t, a)))
		req := acs2.body(t, a)
		req["auth"] = passwordAuth(session, "alice", "wrong")
		if st, body := doJSON(t, env, "POST", up, alice.c.AccessToken, req); st != 401 || body["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("wrong password: %d %v", st, body)
		}
		// The session is bound to these keys: it cannot authorise others.
		req = newCrossSigning(t).body(t, a)
		req["auth"] = passwordAuth(session, "alice", "pw")
		if st, body := doJSON(t, env, "POST", up, alice.c.AccessToken, req); st != 403 {
			t.Fatalf("session used for other keys: %d %v", st, body)
		}
		req = acs2.body(t, a)
		req["auth"] = passwordAuth(session, "alice", "pw")
		if st, body := doJSON(t, env, "POST", up, alice.c.AccessToken, req); st != 200 {
			t.Fatalf("replace with password: %d %v", st, body)
		}
		acs = acs2
		resp := queryKeys(t, alice.c, a, b)
		if firstKey(resp.MasterKeys[a]) != acs.master.pub || firstKey(resp.SelfSigningKeys[a]) != acs.self.pub ||
			firstKey(resp.UserSigningKeys[a]) != acs.user.pub || firstKey(resp.MasterKeys[b]) != bcs.master.pub {
			t.Fatalf("cross-signing keys as alice sees them: %+v", resp)
		}
		if _, ok := resp.UserSigningKeys[b]; ok {
			t.Fatalf("alice sees bob's user-signing key")
		}

		// Alice signs her device with her self-signing key, her master key
		// with her device, and bob's master key with her user-signing key.
		dk := alice.deviceKeys(t)
		dk = acs.self.sign(t, a, dk)
		master := alice.sign(t, acs.master.object(a, "master"))
		bobMaster := acs.user.sign(t, a, bcs.master.object(b, "master"))
		sigReq := map[string]any{
			string(a): map[string]any{string(alice.c.DeviceID): dk, acs.master.pub: master},
			string(b): map[string]any{bcs.master.pub: bobMaster},
		}
		st, body := doJSON(t, env, "POST", keysPath+"signatures/upload", alice.c.AccessToken, sigReq)
		if st != 200 || len(body["failures"].(map[string]any)) != 0 {
			t.Fatalf("signatures upload: %d %v", st, body)
		}
		resp = queryKeys(t, carol, a, b)
		got := resp.DeviceKeys[a][alice.c.DeviceID]
		if got.Signatures[a][id.KeyID("ed25519:"+acs.self.pub)] == "" || got.Signatures[a][id.KeyID("ed25519:"+string(alice.c.DeviceID))] == "" {
			t.Fatalf("device signatures %v", got.Signatures)
		}
		raw, _ := json.Marshal(got)
		if ok, err := signatures.VerifySignatureJSON(json.RawMessage(raw), a, acs.self.pub, id.Ed25519(acs.self.pub)); !ok || err != nil {
			t.Fatalf("self-signing signature as served does not verify: %v", err)
		}
		if resp.MasterKeys[a].Signatures[a][id.KeyID("ed25519:"+string(alice.c.DeviceID))] == "" {
			t.Fatalf("master key signatures %v", resp.MasterKeys[a].Signatures)
		}
		if len(resp.MasterKeys[b].Signatures[a]) != 0 {
			t.Fatalf("carol sees alice's signature on bob's master key")
		}
		if sig := queryKeys(t, alice.c, b).MasterKeys[b].Signatures[a][id.KeyID("ed25519:"+acs.user.pub)]; sig == "" {
			t.Fatalf("alice does not see her signature on bob's master key")
		}

		// Bad signatures are reported per key.
		forged := alice.deviceKeys(t)
		forged = addSignature(forged, a, "ed25519:"+acs.self.pub, base64.RawStdEncoding.EncodeToString(make([]byte, 64)))
		tampered := acs.self.sign(t, a, alice.deviceKeys(t))
		tampered["algorithms"] = []string{"x"}
		byStranger := newXSKey(t).sign(t, a, bcs.master.object(b, "master"))
		sigReq = map[string]any{
			string(a):           map[string]any{string(alice.c.DeviceID): forged, "NOSUCHDEVICE": acs.self.sign(t, a, map[string]any{"device_id": "NOSUCHDEVICE"})},
			string(b):           map[string]any{bcs.master.pub: byStranger, string(bob.c.DeviceID): acs.user.sign(t, a, bob.deviceKeys(t))},
			"@x:remote.example": map[string]any{"K": map[string]any{}},
		}
		st, body = doJSON(t, env, "POST", keysPath+"signatures/upload", alice.c.AccessToken, sigReq)
		failures, _ := body["failures"].(map[string]any)
		code := func(u, k string) any {
			m, _ := failures[u].(map[string]any)
			f, _ := m[k].(map[string]any)
			return f["errcode"]
		}
		if st != 200 || code(string(a), string(alice.c.DeviceID)) != "M_INVALID_SIGNATURE" || code(string(a), "NOSUCHDEVICE") != "M_NOT_FOUND" ||
			code(string(b), bcs.master.pub) != "M_INVALID_SIGNATURE" || code(string(b), string(bob.c.DeviceID)) != "M_NOT_FOUND" ||
			code("@x:remote.example", "K") == nil {
			t.Fatalf("failures: %d %v", st, body)
		}
		st, body = doJSON(t, env, "POST", keysPath+"signatures/upload", alice.c.AccessToken,
			map[string]any{string(a): map[string]any{string(alice.c.DeviceID): tampered}})
		if code := body["failures"].(map[string]any)[string(a)].(map[string]any)[string(alice.c.DeviceID)].(map[string]any)["errcode"]; st != 200 || code != "M_INVALID_PARAM" {
			t.Fatalf("tampered object: %d %v", st, body)
		}

		// mautrix's own upload (with its UIA callback) works too.
		mcs := newCrossSigning(t)
		err := bob.c.UploadCrossSigningKeys(context.Background(), &mautrix.UploadCrossSigningKeysReq[any]{
			Master:      mautrixXS(t, b, mcs.master, "master", nil),
			SelfSigning: mautrixXS(t, b, mcs.self, "self_signing", mcs.master),
			UserSigning: mautrixXS(t, b, mcs.user, "user_signing", mcs.master),
		}, func(r *mautrix.RespUserInteractive) any {
			return passwordAuth(r.Session, "bob", "bobpw")
		})
		if err != nil {
			t.Fatalf("mautrix upload with UIA: %v", err)
		}
		if got := firstKey(queryKeys(t, carol, b).MasterKeys[b]); got != mcs.master.pub {
			t.Fatalf("bob's master key %s, want %s", got, mcs.master.pub)
		}
	})
}

func firstKey(k mautrix.CrossSigningKeys) string { return string(k.FirstKey()) }

// mautrixXS builds a cross-signing key in mautrix's type, signed by signer.
func mautrixXS(t *testing.T, u id.UserID, k *xsKey, usage string, signer *xsKey) mautrix.CrossSigningKeys {
	obj := k.object(u, usage)
	if signer != nil {
		obj = signer.sign(t, u, obj)
	}
	var out mautrix.CrossSigningKeys
	b, _ := json.Marshal(obj)
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDeviceDeletionDropsKeys(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		alice := register(t, env, "alice", "pw")
		phone := newOlmDevice(t, login(t, env, "alice", "pw", "phone"))
		laptop := newOlmDevice(t, login(t, env, "alice", "pw", "laptop"))
		phone.upload(t, env, 3, true)
		laptop.upload(t, env, 3, true)
		if n := len(queryKeys(t, alice, alice.UserID).DeviceKeys[alice.UserID]); n != 2 {
			t.Fatalf("%d devices with keys", n)
		}
		path := "/_matrix/client/v3/devices/" + string(phone.c.DeviceID)
		session := uiaSession(t, env, "DELETE", path, alice.AccessToken, `{}`)
		if st, body := doJSON(t, env, "DELETE", path, alice.AccessToken, map[string]any{"auth": passwordAuth(session, "alice", "pw")}); st != 200 {
			t.Fatalf("delete: %d %v", st, body)
		}
		keys := queryKeys(t, alice, alice.UserID).DeviceKeys[alice.UserID]
		if _, ok := keys[phone.c.DeviceID]; ok || len(keys) != 1 {
			t.Fatalf("keys after deleting the phone: %v", keys)
		}
		resp, err := alice.ClaimKeys(context.Background(), &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{
			alice.UserID: {phone.c.DeviceID: id.KeyAlgorithmSignedCurve25519}}})
		if err != nil || len(resp.OneTimeKeys[alice.UserID]) != 0 {
			t.Fatalf("claim from a deleted device: %+v %v", resp, err)
		}
		// Logging out drops the device's keys too.
		if _, err := laptop.c.Logout(context.Background()); err != nil {
			t.Fatal(err)
		}
		if keys := queryKeys(t, alice, alice.UserID).DeviceKeys[alice.UserID]; len(keys) != 0 {
			t.Fatalf("keys after logout: %v", keys)
		}
		// The device-list stream saw it.
		st, body, _ := do(t, env, "GET", keysPath+"changes?from=d0&to=d1000000", alice.AccessToken, "")
		if st != 200 || !slices.Contains(body["changed"].([]any), any(string(alice.UserID))) {
			t.Fatalf("changes: %d %v", st, body)
		}
	})
}

func TestKeyChanges(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := newOlmDevice(t, register(t, env, "bob", "pw"))
		carol := newOlmDevice(t, register(t, env, "carol", "pw"))
		changes := func(from string) (changed, left []string) {
			t.Helper()
			st, body, _ := do(t, env, "GET", keysPath+"changes?from="+url.QueryEscape(from)+"&to=d999999", alice.AccessToken, "")
			if st != 200 {
				t.Fatalf("changes: %d %v", st, body)
			}
			for _, u := range body["changed"].([]any) {
				changed = append(changed, u.(string))
			}
			for _, u := range body["left"].([]any) {
				left = append(left, u.(string))
			}
			return changed, left
		}
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.c.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		bob.upload(t, env, 1, false)
		carol.upload(t, env, 1, false) // shares no room with alice
		changed, left := changes("d0")
		if !slices.Equal(changed, []string{string(bob.c.UserID)}) || len(left) != 0 {
			t.Fatalf("after bob's upload: changed %v left %v", changed, left)
		}
		// The sync token form is accepted too (its last part is the position).
		if changed, _ = changes("s0_0_0_0_0_0"); !slices.Equal(changed, []string{string(bob.c.UserID)}) {
			t.Fatalf("with a sync token: %v", changed)
		}
		if changed, _ = changes("d1000000"); len(changed) != 0 {
			t.Fatalf("from the future: %v", changed)
		}
		if _, err := bob.c.LeaveRoom(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		changed, left = changes("d0")
		if len(changed) != 0 || !slices.Equal(left, []string{string(bob.c.UserID)}) {
			t.Fatalf("after bob left: changed %v left %v", changed, left)
		}
		// Carol joining makes her keys news to alice.
		if _, err := carol.c.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		changed, _ = changes("d0")
		if !slices.Contains(changed, string(carol.c.UserID)) {
			t.Fatalf("after carol joined: %v", changed)
		}
		// When alice herself leaves, everyone she shared the room with is gone.
		if _, err := alice.LeaveRoom(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		changed, left = changes("d0")
		if len(changed) != 0 || !slices.Equal(left, []string{string(bob.c.UserID), string(carol.c.UserID)}) {
			t.Fatalf("after alice left: changed %v left %v", changed, left)
		}
	})
}

func TestKeyBackup(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		tok := alice.AccessToken
		const rk = "/_matrix/client/v3/room_keys/"
		const alg = "m.megolm_backup.v1.curve25519-aes-sha2"
		if st, body, _ := do(t, env, "GET", rk+"version", tok, ""); st != 404 || body["errcode"] != "M_NOT_FOUND" {
			t.Fatalf("latest with no backup: %d %v", st, body)
		}
		st, body := doJSON(t, env, "POST", rk+"version", tok, map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "pk1"}})
		if st != 200 || body["version"] != "1" {
			t.Fatalf("create: %d %v", st, body)
		}
		latest, err := alice.GetKeyBackupLatestVersion(ctx)
		if err != nil || latest.Version != "1" || latest.Count != 0 || latest.AuthData.PublicKey != "pk1" || latest.Algorithm != alg {
			t.Fatalf("latest: %+v %v", latest, err)
		}
		etag0 := latest.ETag
		keyData := func(fmi, fc int, verified bool, tag string) map[string]any {
			return map[string]any{"first_message_index": fmi, "forwarded_count": fc, "is_verified": verified,
				"session_data": map[string]any{"ephemeral": base64.RawStdEncoding.EncodeToString(make([]byte, 32)),
					"ciphertext": base64.RawStdEncoding.EncodeToString([]byte(tag)), "mac": "bWFj"}}
		}
		put := func(path string, v any) (string, float64) {
			t.Helper()
			st, body := doJSON(t, env, "PUT", rk+path, tok, v)
			if st != 200 {
				t.Fatalf("PUT %s: %d %v", path, st, body)
			}
			return body["etag"].(string), body["count"].(float64)
		}
		get := func(path string) map[string]any {
			t.Helper()
			st, body, _ := do(t, env, "GET", rk+path, tok, "")
			if st != 200 {
				t.Fatalf("GET %s: %d %v", path, st, body)
			}
			return body
		}
		sessionTag := func(path string) string {
			t.Helper()
			b, _ := base64.RawStdEncoding.DecodeString(get(path)["session_data"].(map[string]any)["ciphertext"].(string))
			return string(b)
		}
		const room = "!room:cirrus.test"
		sp := "keys/" + url.PathEscape(room) + "/sess1?version=1"
		e1, c := put(sp, keyData(5, 1, false, "first"))
		if c != 1 || e1 == etag0 {
			t.Fatalf("first key: etag %s count %v", e1, c)
		}
		// The better key wins: worse ones change nothing.
		for _, worse := range []map[string]any{keyData(6, 0, false, "later index"), keyData(5, 2, false, "more forwarded"), keyData(5, 1, false, "tie")} {
			if e, c := put(sp, worse); e != e1 || c != 1 {
				t.Fatalf("worse key changed the backup: %s %v", e, c)
			}
		}
		if got := sessionTag(sp); got != "first" {
			t.Fatalf("kept %q", got)
		}
		e2, _ := put(sp, keyData(5, 0, false, "less forwarded"))
		if got := sessionTag(sp); got != "less forwarded" || e2 == e1 {
			t.Fatalf("lower forwarded_count: %q %s", got, e2)
		}
		put(sp, keyData(3, 9, false, "lower index"))
		if got := sessionTag(sp); got != "lower index" {
			t.Fatalf("lower first_message_index: %q", got)
		}
		put(sp, keyData(50, 9, true, "verified"))
		if got := sessionTag(sp); got != "verified" {
			t.Fatalf("verified: %q", got)
		}
		put(sp, keyData(0, 0, false, "unverified"))
		if got := sessionTag(sp); got != "verified" {
			t.Fatalf("unverified replaced verified: %q", got)
		}
		// Room and whole-backup uploads.
		_, c = put("keys/"+url.PathEscape(room)+"?version=1", map[string]any{"sessions": map[string]any{"sess2": keyData(0, 0, false, "s2"), "sess3": keyData(0, 0, false, "s3")}})
		if c != 3 {
			t.Fatalf("count after room upload %v", c)
		}
		_, c = put("keys?version=1", map[string]any{"rooms": map[string]any{"!other:cirrus.test": map[string]any{"sessions": map[string]any{"o1": keyData(0, 0, false, "o1")}}}})
		if c != 4 {
			t.Fatalf("count after full upload %v", c)
		}
		all, err := alice.GetKeyBackup(ctx, "1")
		if err != nil || len(all.Rooms) != 2 || len(all.Rooms[room].Sessions) != 3 {
			t.Fatalf("all keys: %+v %v", all, err)
		}
		if got := get("keys/" + url.PathEscape(room) + "?version=1")["sessions"].(map[string]any); len(got) != 3 {
			t.Fatalf("room keys %v", got)
		}
		if got := get("keys/" + url.PathEscape("!empty:cirrus.test") + "?version=1")["sessions"].(map[string]any); len(got) != 0 {
			t.Fatalf("empty room %v", got)
		}
		// A new version becomes current; writing to the old one is refused.
		st, body = doJSON(t, env, "POST", rk+"version", tok, map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "pk2"}})
		if st != 200 || body["version"] != "2" {
			t.Fatalf("second version: %d %v", st, body)
		}
		st, body = doJSON(t, env, "PUT", rk+sp, tok, keyData(0, 0, true, "x"))
		if st != 403 || body["errcode"] != "M_WRONG_ROOM_KEYS_VERSION" || body["current_version"] != "2" {
			t.Fatalf("write to old version: %d %v", st, body)
		}
		if info := get("version/1"); info["count"] != 4.0 || info["version"] != "1" {
			t.Fatalf("old version info %v", info)
		}
		// Update auth_data (only that may change).
		st, body = doJSON(t, env, "PUT", rk+"version/2", tok, map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "pk2b"}, "version": "2"})
		if st != 200 {
			t.Fatalf("update: %d %v", st, body)
		}
		if info := get("version"); info["version"] != "2" || info["auth_data"].(map[string]any)["public_key"] != "pk2b" || info["count"] != 0.0 {
			t.Fatalf("after update: %v", info)
		}
		// Deletes at each level report the new count.
		st, body, _ = do(t, env, "DELETE", rk+sp, tok, "")
		if st != 200 || body["count"] != 3.0 {
			t.Fatalf("delete session: %d %v", st, body)
		}
		if st, body, _ := do(t, env, "GET", rk+sp, tok, ""); st != 404 || body["errcode"] != "M_NOT_FOUND" {
			t.Fatalf("deleted session: %d %v", st, body)
		}
		st, body, _ = do(t, env, "DELETE", rk+"keys/"+url.PathEscape(room)+"?version=1", tok, "")
		if st != 200 || body["count"] != 1.0 {
			t.Fatalf("delete room: %d %v", st, body)
		}
		st, body, _ = do(t, env, "DELETE", rk+"keys?version=1", tok, "")
		if st != 200 || body["count"] != 0.0 {
			t.Fatalf("delete all: %d %v", st, body)
		}
		// Deleting the current version makes the previous one current;
		// deleting it twice is fine; a version that never existed is not.
		for range 2 {
			if st, body, _ := do(t, env, "DELETE", rk+"version/2", tok, ""); st != 200 {
				t.Fatalf("delete version: %d %v", st, body)
			}
		}
		if info := get("version"); info["version"] != "1" {
			t.Fatalf("latest after deleting 2: %v", info)
		}
		if st, body, _ := do(t, env, "GET", rk+"version/2", tok, ""); st != 404 {
			t.Fatalf("deleted version: %d %v", st, body)
		}
		// Another user sees none of it.
		bob := register(t, env, "bob", "pw")
		if st, _, _ := do(t, env, "GET", rk+"version/1", bob.AccessToken, ""); st != 404 {
			t.Fatalf("bob reads alice's backup: %d", st)
		}

		cases := []struct {
			name, method, path string
			body               any
			status             int
			code               string
		}{
			{"create without algorithm", "POST", "version", map[string]any{"auth_data": map[string]any{}}, 400, "M_MISSING_PARAM"},
			{"create without auth_data", "POST", "version", map[string]any{"algorithm": alg}, 400, "M_MISSING_PARAM"},
			{"create with auth_data not an object", "POST", "version", map[string]any{"algorithm": alg, "auth_data": 5}, 400, "M_BAD_JSON"},
			{"unknown version", "GET", "version/77", nil, 404, "M_NOT_FOUND"},
			{"version that is not a number", "GET", "version/abc", nil, 404, "M_NOT_FOUND"},
			{"delete a version that never existed", "DELETE", "version/99", nil, 404, "M_NOT_FOUND"},
			{"update with another algorithm", "PUT", "version/1", map[string]any{"algorithm": "m.other", "auth_data": map[string]any{}}, 400, "M_INVALID_PARAM"},
			{"update with another version in the body", "PUT", "version/1", map[string]any{"algorithm": alg, "auth_data": map[string]any{}, "version": "2"}, 400, "M_INVALID_PARAM"},
			{"update an unknown version", "PUT", "version/42", map[string]any{"algorithm": alg, "auth_data": map[string]any{}}, 404, "M_NOT_FOUND"},
			{"put without version", "PUT", "keys/!r:x/s", keyData(0, 0, false, "x"), 400, "M_MISSING_PARAM"},
			{"put to an old version", "PUT", "keys/!r:x/s?version=2", keyData(0, 0, false, "x"), 403, "M_WRONG_ROOM_KEYS_VERSION"},
			{"put without session_data", "PUT", "keys/!r:x/s?version=1", map[string]any{"first_message_index": 0, "forwarded_count": 0, "is_verified": false}, 400, "M_MISSING_PARAM"},
			{"put without is_verified", "PUT", "keys/!r:x/s?version=1", map[string]any{"first_message_index": 0, "forwarded_count": 0, "session_data": map[string]any{}}, 400, "M_MISSING_PARAM"},
			{"put with a string index", "PUT", "keys/!r:x/s?version=1", map[string]any{"first_message_index": "0", "forwarded_count": 0, "is_verified": false, "session_data": map[string]any{}}, 400, "M_BAD_JSON"},
			{"put room without sessions", "PUT", "keys/!r:x?version=1", map[string]any{}, 400, "M_MISSING_PARAM"},
			{"put all without rooms", "PUT", "keys?version=1", map[string]any{}, 400, "M_MISSING_PARAM"},
			{"get keys of an unknown version", "GET", "keys?version=9", nil, 404, "M_NOT_FOUND"},
			{"get keys without version", "GET", "keys", nil, 400, "M_MISSING_PARAM"},
			{"delete keys of an unknown version", "DELETE", "keys?version=9", nil, 404, "M_NOT_FOUND"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				var b string
				if tc.body != nil {
					b = mustMarshal(t, tc.body)
				}
				st, resp, _ := do(t, env, tc.method, rk+tc.path, tok, b)
				if st != tc.status || resp["errcode"] != tc.code {
					t.Fatalf("got %d %v, want %d %s", st, resp, tc.status, tc.code)
				}
			})
		}
	})
}
