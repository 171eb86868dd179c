// Package keys is end-to-end encryption support on the server side: device
// identity keys, one-time and fallback keys, cross-signing keys and the
// signatures users make with them, the device-list change stream that /sync
// and /keys/changes read, and server-side key backups.
//
// The server never sees a private key. What it guarantees is bookkeeping:
// keys are stored as their owners signed them (signatures are checked on
// the way in), each one-time key is handed out exactly once however many
// claims race for it, and every change to a user's keys is recorded in the
// "devicelists" stream in the same transaction as the change itself.
//
// Keys (see ARCHITECTURE.md, "Key schema"):
//
//	e2e#<@user>        dev#<device>                              device keys as signed by the device
//	e2e#<@user>        otk#<device>␟<algorithm>␟<seq>␟<key id>   one unclaimed one-time key
//	e2e#<@user>        otkseq                                    upload counter (Num) ordering one-time keys
//	e2e#<@user>        fbk#<device>␟<algorithm>                  the fallback key and whether it was used
//	e2e#<@user>        xsk#<usage>                               cross-signing key (master, self_signing, user_signing)
//	e2e#<@user>        sig#d␟<device>␟<@signer>␟<signer key id>  a signature on a device's keys
//	e2e#<@user>        sig#x␟<public key>␟<@signer>␟<key id>     a signature on the master key
//	e2e#<@user>        dlseq                                     a local user's device-list stream id (Num), for EDUs
//	e2e#<@user>        remote                                    whether our copy of a remote user's keys is complete
//	stream#devicelists <pos>                                     who changed (core/stream)
//	backup#<@user>     counter / ver#<n> / stat#<n> / etag#<n>   key backup versions (backup.go)
//	rk#<@user>␟<n>     <room>␟<session>                          one backed-up room key
//
// (␟ is the unit separator \x1f.) Everything is addressed by user id, so
// the copies of remote users' keys (remote.go) live in the same items.
package keys

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/crypto/signatures"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/accounts"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/stream"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// StreamName is the name of the device-list change stream.
const StreamName = "devicelists"

// sep separates the parts of composite sort keys.
const sep = "\x1f"

// maxAttempts bounds re-read-and-retry loops around conditional writes.
const maxAttempts = 8

// Rooms is what the device-list logic needs from the room engine.
type Rooms interface {
	UserRooms(ctx context.Context, u id.UserID) ([]rooms.MembershipRecord, error)
	CurrentState(ctx context.Context, r id.RoomID, typ string) ([]*rooms.Event, error)
}

// Devices is what key queries need from accounts: which devices exist, and
// their display names.
type Devices interface {
	Devices(ctx context.Context, u id.UserID) ([]accounts.Device, error)
}

// Service is the key store and its rules.
type Service struct {
	T          table.Table
	ServerName string
	Rooms      Rooms
	Accounts   Devices
	// Changes is the device-list stream (New sets it up).
	Changes *stream.Stream
	// Notify, if set, is called with the stream's name after each change
	// is committed (wakes waiting /sync requests in this process).
	Notify func(stream string)
	// Fed, if set, reaches other servers: remote users' keys, and the
	// EDUs that tell them of our users' changes (remote.go).
	Fed Federation
	// Servers lists the servers with joined members in a room (where our
	// users' device-list updates go).
	Servers func(ctx context.Context, room id.RoomID) ([]string, error)
	Log     *slog.Logger
	Now     func() time.Time
}

// New builds the service.
func New(t table.Table, serverName string, rs Rooms, acc Devices, log *slog.Logger, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &Service{T: t, ServerName: serverName, Rooms: rs, Accounts: acc, Log: log, Now: now,
		Changes: &stream.Stream{T: t, Name: StreamName, Now: now}}
}

func (s *Service) now() time.Time { return s.Now() }

// IsLocal reports whether u belongs to this server.
func (s *Service) IsLocal(u id.UserID) bool {
	_, server, err := u.Parse()
	return err == nil && server == s.ServerName
}

// Item keys.
func e2ePK(u id.UserID) string { return "e2e#" + string(u) }
func devKey(u id.UserID, d id.DeviceID) table.Key {
	return table.Key{PK: e2ePK(u), SK: "dev#" + string(d)}
}
func otkPrefix(d id.DeviceID) string { return "otk#" + string(d) + sep }
func otkAlgPrefix(d id.DeviceID, alg string) string {
	return otkPrefix(d) + alg + sep
}
func otkSeqKey(u id.UserID) table.Key { return table.Key{PK: e2ePK(u), SK: "otkseq"} }
func fbkPrefix(d id.DeviceID) string  { return "fbk#" + string(d) + sep }
func fbkKey(u id.UserID, d id.DeviceID, alg string) table.Key {
	return table.Key{PK: e2ePK(u), SK: fbkPrefix(d) + alg}
}
func xskKey(u id.UserID, usage string) table.Key { return table.Key{PK: e2ePK(u), SK: "xsk#" + usage} }

const (
	sigDevicePrefix = "sig#d" + sep
	sigMasterPrefix = "sig#x" + sep
)

func sigDeviceSK(d id.DeviceID, signer id.UserID, keyID string) string {
	return sigDevicePrefix + string(d) + sep + string(signer) + sep + keyID
}
func sigMasterSK(pub string, signer id.UserID, keyID string) string {
	return sigMasterPrefix + pub + sep + string(signer) + sep + keyID
}

// deviceOfSK returns the device a per-device item belongs to ("" if the
// sort key is not one).
func deviceOfSK(sk string) id.DeviceID {
	var rest string
	switch {
	case strings.HasPrefix(sk, "dev#"):
		return id.DeviceID(strings.TrimPrefix(sk, "dev#"))
	case strings.HasPrefix(sk, "otk#"):
		rest = strings.TrimPrefix(sk, "otk#")
	case strings.HasPrefix(sk, "fbk#"):
		rest = strings.TrimPrefix(sk, "fbk#")
	case strings.HasPrefix(sk, sigDevicePrefix):
		rest = strings.TrimPrefix(sk, sigDevicePrefix)
	default:
		return ""
	}
	d, _, _ := strings.Cut(rest, sep)
	return id.DeviceID(d)
}

// queryAll reads every item of a partition under a prefix.
func (s *Service) queryAll(ctx context.Context, pk, prefix string) ([]table.Item, error) {
	q := table.Query{PK: pk, Prefix: prefix}
	var out []table.Item
	for {
		page, err := s.T.Query(ctx, q)
		if err != nil {
			return nil, err
		}
		out = append(out, page.Items...)
		if page.Next == "" {
			return out, nil
		}
		q.Cursor = page.Next
	}
}

// ---- JSON objects as clients sign them ----

// object is a JSON object with its members kept raw, so that what a client
// signed is stored and returned byte for byte (after canonical encoding).
type object map[string]json.RawMessage

func parseObject(raw json.RawMessage) (object, bool) {
	var o object
	if err := json.Unmarshal(raw, &o); err != nil || o == nil {
		return nil, false
	}
	return o, true
}

// encode returns the object's canonical JSON.
func (o object) encode() json.RawMessage {
	b, err := json.Marshal(map[string]json.RawMessage(o))
	if err != nil {
		panic(err) // members came from valid JSON
	}
	c, err := canonicaljson.CanonicalJSON(b)
	if err != nil {
		return b
	}
	return c
}

// str reads a string member (ok=false when absent or not a string).
func (o object) str(name string) (string, bool) {
	raw, ok := o[name]
	if !ok {
		return "", false
	}
	var v string
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", false
	}
	return v, true
}

// sigs is the "signatures" member: user → key id → signature.
type sigs map[string]map[string]string

func (o object) signatures() (sigs, error) {
	raw, ok := o["signatures"]
	if !ok {
		return sigs{}, nil
	}
	var v sigs
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	if v == nil {
		v = sigs{}
	}
	return v, nil
}

// withSignatures returns a copy of o whose signatures also hold extra.
func (o object) withSignatures(extra sigs) object {
	if len(extra) == 0 {
		return o
	}
	have, err := o.signatures()
	if err != nil {
		have = sigs{}
	}
	for u, m := range extra {
		if have[u] == nil {
			have[u] = map[string]string{}
		}
		for k, v := range m {
			have[u][k] = v
		}
	}
	out := make(object, len(o)+1)
	for k, v := range o {
		out[k] = v
	}
	out["signatures"], _ = json.Marshal(have)
	return out
}

// signedPart is the object without signatures and unsigned: what
// signatures cover, canonically encoded.
func (o object) signedPart() string {
	c := make(object, len(o))
	for k, v := range o {
		if k != "signatures" && k != "unsigned" {
			c[k] = v
		}
	}
	return string(c.encode())
}

// verify checks the signature by user's key "ed25519:<keyName>" on o
// against the public key pub.
func (o object) verify(user id.UserID, keyName string, pub string) bool {
	ok, err := signatures.VerifySignatureJSON(json.RawMessage(o.encode()), user, keyName, id.Ed25519(pub))
	return err == nil && ok
}

// validEd25519 reports whether s is an unpadded base64 ed25519 public key.
func validEd25519(s string) bool {
	b, err := base64.RawStdEncoding.DecodeString(s)
	return err == nil && len(b) == 32
}

// badKeyName rejects names that would break sort keys.
func badKeyName(s string) bool {
	return s == "" || len(s) > 255 || strings.ContainsAny(s, sep+"\x00")
}

// ---- the device-list stream ----

// change is one entry of the device-list stream.
type change struct {
	// Users whose keys changed.
	Users []id.UserID `json:"users,omitempty"`
	// Or a membership change: User's membership in Room became Membership.
	User       id.UserID `json:"user,omitempty"`
	Room       id.RoomID `json:"room,omitempty"`
	Membership string    `json:"membership,omitempty"`
}

// commit applies ops together with a stream entry for c, atomically. A
// condition failure of one of ops comes back as a *table.TxError whose index
// counts ops from 0 (the stream entry is not counted).
func (s *Service) commit(ctx context.Context, c change, ops []table.Op) error {
	data, _ := json.Marshal(c)
	_, err := s.Changes.Append(ctx, func(int64) ([]byte, []table.Op, error) { return data, ops, nil })
	if err == nil && s.Notify != nil {
		s.Notify(s.Changes.Name)
	}
	return err
}

// failedOp is the index of the operation whose condition failed (-1 if
// err is not a condition failure).
func failedOp(err error) int {
	var txe *table.TxError
	if errors.As(err, &txe) {
		return txe.Index
	}
	return -1
}

// internal is an error about stored data (a 500 for the client).
func internal(format string, args ...any) error { return fmt.Errorf("keys: "+format, args...) }

// invalid is the spec's M_INVALID_PARAM.
func invalid(format string, args ...any) error { return httpapi.InvalidParam(format, args...) }
