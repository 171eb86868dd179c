package keys

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Cross-signing key usages.
const (
	UsageMaster      = "master"
	UsageSelfSigning = "self_signing"
	UsageUserSigning = "user_signing"
)

// sigRecord is one stored signature made with /keys/signatures/upload.
type sigRecord struct {
	Signer    id.UserID `json:"signer"`
	KeyID     string    `json:"key_id"`
	Signature string    `json:"sig"`
}

// publicKeyOf returns the ed25519 public key of a cross-signing key object.
func publicKeyOf(o object) (string, bool) {
	var keys map[string]string
	if err := json.Unmarshal(o["keys"], &keys); err != nil || len(keys) != 1 {
		return "", false
	}
	for name, value := range keys {
		pub, ok := strings.CutPrefix(name, "ed25519:")
		if !ok || pub != value || !validEd25519(pub) {
			return "", false
		}
		return pub, true
	}
	return "", false
}

// checkCrossSigningKey validates the structure of one uploaded
// cross-signing key and returns it with its public key.
func checkCrossSigningKey(field string, raw json.RawMessage, user id.UserID, usage string) (object, string, error) {
	o, ok := parseObject(raw)
	if !ok {
		return nil, "", httpapi.BadJSON("%s must be an object", field)
	}
	uid, ok := o.str("user_id")
	if !ok {
		return nil, "", httpapi.MissingParam("%s.user_id is required", field)
	}
	if id.UserID(uid) != user {
		return nil, "", invalid("%s.user_id %q is not the user making the request", field, uid)
	}
	var usages []string
	if err := json.Unmarshal(o["usage"], &usages); err != nil || len(usages) == 0 {
		return nil, "", httpapi.MissingParam("%s.usage must be a non-empty list of strings", field)
	}
	if !slices.Contains(usages, usage) {
		return nil, "", invalid("%s.usage must contain %q", field, usage)
	}
	pub, ok := publicKeyOf(o)
	if !ok {
		return nil, "", invalid("%s.keys must hold exactly one ed25519 key, named ed25519:<public key>", field)
	}
	if _, err := o.signatures(); err != nil {
		return nil, "", httpapi.BadJSON("%s.signatures has the wrong shape", field)
	}
	return o, pub, nil
}

// CrossSigningUpload is the body of /keys/device_signing/upload (without auth).
type CrossSigningUpload struct {
	Master      json.RawMessage `json:"master_key"`
	SelfSigning json.RawMessage `json:"self_signing_key"`
	UserSigning json.RawMessage `json:"user_signing_key"`
}

// CrossSigningPlan is a checked cross-signing upload, ready to apply.
type CrossSigningPlan struct {
	user id.UserID
	keys map[string]object // usage → new key (only those that change)
	// NeedsAuth is true when the upload replaces existing keys, which the
	// spec puts behind user-interactive authentication.
	NeedsAuth bool
	stored    *crossSigning
}

// ErrNeedsAuth means the stored keys changed after the plan was made and
// the upload now needs user-interactive authentication.
var ErrNeedsAuth = httpapi.Forbidden("the cross-signing keys changed meanwhile; upload again")

// PlanCrossSigning validates an upload against the user's stored keys.
func (s *Service) PlanCrossSigning(ctx context.Context, user id.UserID, req *CrossSigningUpload) (*CrossSigningPlan, error) {
	given := map[string]object{}
	pubs := map[string]string{}
	for _, f := range []struct {
		field, usage string
		raw          json.RawMessage
	}{
		{"master_key", UsageMaster, req.Master},
		{"self_signing_key", UsageSelfSigning, req.SelfSigning},
		{"user_signing_key", UsageUserSigning, req.UserSigning},
	} {
		if len(f.raw) == 0 || string(f.raw) == "null" {
			continue
		}
		o, pub, err := checkCrossSigningKey(f.field, f.raw, user, f.usage)
		if err != nil {
			return nil, err
		}
		given[f.usage], pubs[f.usage] = o, pub
	}
	stored, err := s.loadCrossSigning(ctx, user)
	if err != nil {
		return nil, err
	}
	masterPub := pubs[UsageMaster]
	if masterPub == "" {
		masterPub = stored.pub(UsageMaster)
	}
	for _, usage := range []string{UsageSelfSigning, UsageUserSigning} {
		o := given[usage]
		if o == nil {
			continue
		}
		if masterPub == "" {
			return nil, httpapi.MissingParam("no master signing key is available to check the %s key against", usage)
		}
		if !o.verify(user, masterPub, masterPub) {
			return nil, invalidSignature("the %s key is not signed by the master key", usage)
		}
	}
	if len(given) > 0 {
		devs, err := s.Accounts.Devices(ctx, user)
		if err != nil {
			return nil, err
		}
		for _, d := range devs {
			for _, pub := range pubs {
				if string(d.ID) == pub {
					return nil, httpapi.Forbidden("a cross-signing public key is the same as one of your device ids")
				}
			}
		}
	}
	plan := &CrossSigningPlan{user: user, keys: map[string]object{}, stored: stored}
	for usage, o := range given {
		if old := stored.keys[usage]; old != nil && old.signedPart() == o.signedPart() {
			continue // the same key again: nothing to do
		}
		plan.keys[usage] = o
	}
	plan.NeedsAuth = len(plan.keys) > 0 && stored.keys[UsageMaster] != nil
	return plan, nil
}

// ApplyCrossSigning stores a planned upload. authorized says whether the
// caller completed user-interactive auth; if the keys changed since the
// plan in a way that needs it, ErrNeedsAuth is returned.
func (s *Service) ApplyCrossSigning(ctx context.Context, plan *CrossSigningPlan, authorized bool) error {
	if len(plan.keys) == 0 {
		return nil
	}
	u := plan.user
	stored := plan.stored
	for attempt := 0; ; attempt++ {
		changed := map[string]object{}
		for usage, o := range plan.keys {
			if old := stored.keys[usage]; old == nil || old.signedPart() != o.signedPart() {
				changed[usage] = o
			}
		}
		if len(changed) == 0 {
			return nil
		}
		if stored.keys[UsageMaster] != nil && !authorized {
			return ErrNeedsAuth
		}
		var ops []table.Op
		for _, usage := range []string{UsageMaster, UsageSelfSigning, UsageUserSigning} {
			o := changed[usage]
			if o == nil {
				continue
			}
			k := xskKey(u, usage)
			cond, version := table.IfNotExists(), int64(1)
			if v, ok := stored.versions[usage]; ok {
				cond, version = table.IfVersion(v), v+1
			}
			ops = append(ops, table.Put(table.Item{PK: k.PK, SK: k.SK, Data: o.encode(), Version: version}, cond))
		}
		oldMaster := stored.pub(UsageMaster)
		if changed[UsageMaster] != nil && oldMaster != "" {
			// A new master key orphans the keys the old one signed.
			for _, usage := range []string{UsageSelfSigning, UsageUserSigning} {
				if _, replaced := plan.keys[usage]; !replaced && stored.keys[usage] != nil {
					ops = append(ops, table.Delete(xskKey(u, usage), table.IfVersion(stored.versions[usage])))
				}
			}
		}
		err := s.commit(ctx, change{Users: []id.UserID{u}}, ops)
		if failedOp(err) >= 0 && attempt < maxAttempts {
			// Someone else changed the keys: judge again from what is stored now.
			if stored, err = s.loadCrossSigning(ctx, u); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if m := changed[UsageMaster]; m != nil && oldMaster != "" {
			if p, _ := publicKeyOf(m); p != oldMaster {
				s.dropMasterSignatures(ctx, u, oldMaster)
			}
		}
		if changed[UsageMaster] != nil || changed[UsageSelfSigning] != nil {
			s.announceCrossSigning(ctx, u)
		}
		return nil
	}
}

// dropMasterSignatures removes signatures on a replaced master key (best
// effort: they are never shown once the key is gone).
func (s *Service) dropMasterSignatures(ctx context.Context, u id.UserID, pub string) {
	items, err := s.queryAll(ctx, e2ePK(u), sigMasterPrefix+pub+sep)
	if err != nil {
		s.Log.Warn("keys: listing old master key signatures", "user", u, "err", err)
		return
	}
	for _, it := range items {
		if err := s.T.Delete(ctx, it.Key(), table.Cond{}); err != nil {
			s.Log.Warn("keys: deleting old master key signature", "user", u, "err", err)
			return
		}
	}
}

// ---- /keys/signatures/upload ----

// SignatureFailure is one entry of the failures map.
type SignatureFailure struct {
	Code    string `json:"errcode"`
	Message string `json:"error"`
}

func sigFail(code, format string, args ...any) *SignatureFailure {
	return &SignatureFailure{Code: code, Message: httpapi.BadRequest(format, args...).Message}
}

// maxSignatureObjects bounds the signed objects of one request.
const maxSignatureObjects = 1000

// UploadSignatures stores the caller's signatures on keys: on their own
// devices (made with their self-signing key), on their own master key (made
// with one of their devices) and on other users' master keys (made with
// their user-signing key). Each key that could not be signed gets a failure.
func (s *Service) UploadSignatures(ctx context.Context, caller id.UserID, body map[id.UserID]map[string]json.RawMessage) (map[id.UserID]map[string]*SignatureFailure, error) {
	total := 0
	for _, m := range body {
		total += len(m)
	}
	if total > maxSignatureObjects {
		return nil, invalid("at most %d signed objects per request", maxSignatureObjects)
	}
	failures := map[id.UserID]map[string]*SignatureFailure{}
	fail := func(u id.UserID, key string, f *SignatureFailure) {
		if failures[u] == nil {
			failures[u] = map[string]*SignatureFailure{}
		}
		failures[u][key] = f
	}
	mine, err := s.loadCrossSigning(ctx, caller)
	if err != nil {
		return nil, err
	}
	for target, objs := range body {
		var ops []table.Op
		var theirs *crossSigning
		if target == caller {
			theirs = mine
		} else if theirs, err = s.loadCrossSigning(ctx, target); err != nil {
			return nil, err
		}
		if !s.IsLocal(target) && theirs.keys[UsageMaster] == nil {
			// Remote users' keys are signed against our copy of them.
			for k := range objs {
				fail(target, k, sigFail("M_NOT_FOUND", "query %s's keys before signing them", target))
			}
			continue
		}
		var signedDevices []id.DeviceID
		signedMaster := false
		for keyID, raw := range objs {
			recs, f, err := s.checkSigned(ctx, caller, target, keyID, raw, mine, theirs)
			if err != nil {
				return nil, err
			}
			if f != nil {
				fail(target, keyID, f)
				continue
			}
			for _, r := range recs {
				sk := ""
				if r.device != "" {
					sk = sigDeviceSK(r.device, caller, r.KeyID)
					signedDevices = append(signedDevices, r.device)
				} else {
					sk = sigMasterSK(r.master, caller, r.KeyID)
					signedMaster = true
				}
				data, _ := json.Marshal(r.sigRecord)
				ops = append(ops, table.Put(table.Item{PK: e2ePK(target), SK: sk, Data: data}, table.Cond{}))
			}
		}
		for len(ops) > 0 {
			n := min(len(ops), table.MaxTxItems-1)
			if err := s.commit(ctx, change{Users: []id.UserID{target}}, ops[:n]); err != nil {
				return nil, err
			}
			ops = ops[n:]
		}
		// Other servers hear of their own users' signatures only.
		if target == caller {
			s.announceDevices(ctx, target, sortedUniqueDevices(signedDevices), false)
			if signedMaster {
				s.announceCrossSigning(ctx, target)
			}
		}
	}
	return failures, nil
}

// newSig is a verified signature to store, on a device or a master key.
type newSig struct {
	sigRecord
	device id.DeviceID
	master string
}

// checkSigned verifies one signed object of a signatures upload. A
// failure is the caller's mistake; an error is ours.
func (s *Service) checkSigned(ctx context.Context, caller, target id.UserID, keyID string, raw json.RawMessage, mine, theirs *crossSigning) ([]newSig, *SignatureFailure, error) {
	o, ok := parseObject(raw)
	if !ok {
		return nil, sigFail("M_BAD_JSON", "the signed object must be a JSON object"), nil
	}
	all, err := o.signatures()
	if err != nil {
		return nil, sigFail("M_BAD_JSON", "signatures has the wrong shape"), nil
	}
	made := all[string(caller)]
	if len(made) == 0 {
		return nil, sigFail("M_INVALID_SIGNATURE", "the object carries no signature by %s", caller), nil
	}
	masterPub := theirs.pub(UsageMaster)
	switch {
	case masterPub != "" && keyID == masterPub && target == caller:
		// Our own master key, signed by one of our devices.
		if theirs.keys[UsageMaster].signedPart() != o.signedPart() {
			return nil, sigFail("M_INVALID_PARAM", "the signed object does not match the stored master key"), nil
		}
		var out []newSig
		for name, sig := range made {
			dev, ok := strings.CutPrefix(name, "ed25519:")
			if !ok || dev == masterPub {
				continue
			}
			it, err := s.T.Get(ctx, devKey(caller, id.DeviceID(dev)))
			if errors.Is(err, table.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, nil, err
			}
			d, _ := parseObject(it.Data)
			ed := identityOf(d, id.DeviceID(dev)).Ed25519
			if ed == "" || !o.verify(caller, dev, ed) {
				return nil, sigFail("M_INVALID_SIGNATURE", "the signature by device %s does not verify", dev), nil
			}
			out = append(out, newSig{sigRecord: sigRecord{Signer: caller, KeyID: name, Signature: sig}, master: masterPub})
		}
		if len(out) == 0 {
			return nil, sigFail("M_INVALID_SIGNATURE", "the master key must be signed by one of your devices"), nil
		}
		return out, nil, nil
	case masterPub != "" && keyID == masterPub:
		// Another user's master key, signed with our user-signing key.
		usk := mine.pub(UsageUserSigning)
		if usk == "" {
			return nil, sigFail("M_MISSING_PARAM", "you have no user-signing key"), nil
		}
		if theirs.keys[UsageMaster].signedPart() != o.signedPart() {
			return nil, sigFail("M_INVALID_PARAM", "the signed object does not match the stored master key"), nil
		}
		sig, ok := made["ed25519:"+usk]
		if !ok || !o.verify(caller, usk, usk) {
			return nil, sigFail("M_INVALID_SIGNATURE", "the master key of %s is not signed with your user-signing key", target), nil
		}
		return []newSig{{sigRecord: sigRecord{Signer: caller, KeyID: "ed25519:" + usk, Signature: sig}, master: masterPub}}, nil, nil
	case target == caller:
		// One of our devices, signed with our self-signing key.
		if badKeyName(keyID) {
			return nil, sigFail("M_NOT_FOUND", "unknown key %q", keyID), nil
		}
		it, err := s.T.Get(ctx, devKey(caller, id.DeviceID(keyID)))
		if errors.Is(err, table.ErrNotFound) {
			return nil, sigFail("M_NOT_FOUND", "no device or key %q", keyID), nil
		}
		if err != nil {
			return nil, nil, err
		}
		stored, _ := parseObject(it.Data)
		if stored.signedPart() != o.signedPart() {
			return nil, sigFail("M_INVALID_PARAM", "the signed object does not match the stored keys of device %s", keyID), nil
		}
		ssk := mine.pub(UsageSelfSigning)
		if ssk == "" {
			return nil, sigFail("M_MISSING_PARAM", "you have no self-signing key"), nil
		}
		sig, ok := made["ed25519:"+ssk]
		if !ok || !o.verify(caller, ssk, ssk) {
			return nil, sigFail("M_INVALID_SIGNATURE", "device %s is not signed with your self-signing key", keyID), nil
		}
		return []newSig{{sigRecord: sigRecord{Signer: caller, KeyID: "ed25519:" + ssk, Signature: sig}, device: id.DeviceID(keyID)}}, nil, nil
	default:
		return nil, sigFail("M_NOT_FOUND", "%q is not the master key of %s; other users' devices cannot be signed", keyID, target), nil
	}
}
