package ephemeral

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/stream"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// MaxToDevicePerSync is how many to-device messages one /sync delivers
// (the spec recommends 100).
const MaxToDevicePerSync = 100

// ToDeviceStream is a device's inbox: a stream of its own whose entries are
// the messages (ToDeviceMessage). Acknowledged entries are deleted.
func (s *Service) ToDeviceStream(u id.UserID, d id.DeviceID) *stream.Stream {
	return &stream.Stream{T: s.T, Name: ToDeviceStreamPrefix + string(u) + "\x1f" + string(d), Now: s.Now}
}

// ToDeviceMessage is one send-to-device event as /sync delivers it.
type ToDeviceMessage struct {
	Sender  id.UserID       `json:"sender"`
	Type    string          `json:"type"`
	Content json.RawMessage `json:"content"`
}

// The transaction id of a send, scoped to the sending device (beside the
// room send transaction ids, which begin with the room id's "!"):
//
//	txn#<@u>#<device> / todevice\x1f<txnId>   ttl 1 day
func toDeviceTxnKey(u id.UserID, d id.DeviceID, txn string) table.Key {
	return table.Key{PK: "txn#" + string(u) + "#" + string(d), SK: "todevice\x1f" + txn}
}

// The acknowledged position of a device's inbox (everything up to it has
// been delivered and deleted):
//
//	user#<@u> / todevack#<device>   n = position, v = version
func ackKey(u id.UserID, d id.DeviceID) table.Key {
	return table.Key{PK: "user#" + string(u), SK: "todevack#" + string(d)}
}

type target struct {
	user   id.UserID
	device id.DeviceID
	msg    []byte
}

// EDUDirectToDevice is the EDU type of to-device messages between servers.
const EDUDirectToDevice = "m.direct_to_device"

// DirectToDevice is the content of an m.direct_to_device EDU.
type DirectToDevice struct {
	Sender    id.UserID                                     `json:"sender"`
	Type      string                                        `json:"type"`
	MessageID string                                        `json:"message_id"`
	Messages  map[id.UserID]map[id.DeviceID]json.RawMessage `json:"messages"`
}

// The record of a to-device message received from another server, claimed
// in the delivery transaction so a repeated EDU delivers nothing:
//
//	fedtodevice#<origin> / <sender>\x1f<message_id>   ttl 1 day
func remoteToDeviceKey(origin string, sender id.UserID, messageID string) table.Key {
	return table.Key{PK: "fedtodevice#" + origin, SK: string(sender) + "\x1f" + messageID}
}

// SendToDevice delivers one message per addressed device ("*" = every device
// of the user). Messages for users of other servers go to their servers in
// one m.direct_to_device EDU per server; messages for local devices that do
// not exist are dropped. A repeated (sender device, txnID) does nothing. Up
// to 99 devices the local delivery is one transaction; beyond that it is
// split, with the transaction id recorded by the last part.
func (s *Service) SendToDevice(ctx context.Context, sender id.UserID, senderDevice id.DeviceID, txnID, typ string, messages map[id.UserID]map[id.DeviceID]json.RawMessage) error {
	tk := toDeviceTxnKey(sender, senderDevice, txnID)
	if _, err := s.T.Get(ctx, tk); err == nil {
		return nil
	} else if !errors.Is(err, table.ErrNotFound) {
		return err
	}
	// The message id is derived from the request, so a retried request
	// that sends the EDUs again is dropped by the receiving servers.
	h := sha256.Sum256([]byte(string(sender) + "\x00" + string(senderDevice) + "\x00" + txnID))
	if err := s.sendRemote(ctx, sender, typ, base64.RawURLEncoding.EncodeToString(h[:18]), messages); err != nil {
		return err
	}
	marker := table.Put(table.Item{PK: tk.PK, SK: tk.SK, TTL: s.Now().Add(24 * time.Hour).Unix(), Data: []byte("1")}, table.IfNotExists())
	return s.deliverLocal(ctx, sender, typ, messages, marker)
}

// sendRemote queues the messages for other servers' users.
func (s *Service) sendRemote(ctx context.Context, sender id.UserID, typ, messageID string, messages map[id.UserID]map[id.DeviceID]json.RawMessage) error {
	byServer := map[string]map[id.UserID]map[id.DeviceID]json.RawMessage{}
	for u, byDevice := range messages {
		_, server, err := u.Parse()
		if err != nil || server == s.ServerName || len(byDevice) == 0 {
			continue
		}
		if byServer[server] == nil {
			byServer[server] = map[id.UserID]map[id.DeviceID]json.RawMessage{}
		}
		byServer[server][u] = byDevice
	}
	if len(byServer) == 0 {
		return nil
	}
	if s.SendEDU == nil {
		return nil // no federation: like messages to unknown devices, dropped
	}
	for server, msgs := range byServer {
		for _, edu := range splitToDevice(sender, typ, messageID, msgs) {
			if err := s.SendEDU(ctx, []string{server}, EDUDirectToDevice, edu); err != nil {
				return err
			}
		}
	}
	return nil
}

// maxToDeviceEDUBytes bounds the messages of one m.direct_to_device EDU, as
// Synapse does with 64 KiB: receivers limit request sizes, and an EDU is
// one outbox item (400 KB at most).
const maxToDeviceEDUBytes = 60 * 1024

// splitToDevice cuts one server's messages into EDUs of at most
// maxToDeviceEDUBytes of message content each (a single larger message goes
// alone). The parts are made in a fixed order and get message ids derived
// from messageID, so a retried request makes the same parts and receivers
// drop the repeats; a message that fits in one EDU keeps messageID itself.
func splitToDevice(sender id.UserID, typ, messageID string, msgs map[id.UserID]map[id.DeviceID]json.RawMessage) []DirectToDevice {
	users := make([]id.UserID, 0, len(msgs))
	for u := range msgs {
		users = append(users, u)
	}
	slices.Sort(users)
	var parts []DirectToDevice
	cur, size := map[id.UserID]map[id.DeviceID]json.RawMessage{}, 0
	for _, u := range users {
		devices := make([]id.DeviceID, 0, len(msgs[u]))
		for d := range msgs[u] {
			devices = append(devices, d)
		}
		slices.Sort(devices)
		for _, d := range devices {
			m := msgs[u][d]
			n := len(m) + len(u) + len(d) + 8 // the keys and JSON punctuation
			if size > 0 && size+n > maxToDeviceEDUBytes {
				parts = append(parts, DirectToDevice{Sender: sender, Type: typ, Messages: cur})
				cur, size = map[id.UserID]map[id.DeviceID]json.RawMessage{}, 0
			}
			if cur[u] == nil {
				cur[u] = map[id.DeviceID]json.RawMessage{}
			}
			cur[u][d] = m
			size += n
		}
	}
	if size > 0 {
		parts = append(parts, DirectToDevice{Sender: sender, Type: typ, Messages: cur})
	}
	for i := range parts {
		parts[i].MessageID = messageID
		if len(parts) > 1 {
			parts[i].MessageID = fmt.Sprintf("%s.%d", messageID, i)
		}
	}
	return parts
}

// ReceiveToDevice delivers an m.direct_to_device EDU from origin to our
// users' devices, once: a repeated (sender, message_id) delivers nothing.
func (s *Service) ReceiveToDevice(ctx context.Context, origin string, content json.RawMessage) error {
	var edu DirectToDevice
	if err := json.Unmarshal(content, &edu); err != nil {
		return fmt.Errorf("malformed m.direct_to_device: %w", err)
	}
	if _, server, err := edu.Sender.Parse(); err != nil || server != origin {
		return fmt.Errorf("m.direct_to_device from %s for sender %s", origin, edu.Sender)
	}
	if edu.Type == "" || edu.MessageID == "" || len(edu.MessageID) > 255 {
		return fmt.Errorf("m.direct_to_device without a type or message id")
	}
	k := remoteToDeviceKey(origin, edu.Sender, edu.MessageID)
	marker := table.Put(table.Item{PK: k.PK, SK: k.SK, TTL: s.Now().Add(24 * time.Hour).Unix(), Data: []byte("1")}, table.IfNotExists())
	local := make(map[id.UserID]map[id.DeviceID]json.RawMessage, len(edu.Messages))
	for u, m := range edu.Messages {
		if s.isLocal(u) {
			local[u] = m
		}
	}
	return s.deliverLocal(ctx, edu.Sender, edu.Type, local, marker)
}

// deliverLocal writes the messages for local devices into their inboxes,
// with marker (the idempotency record) in the last transaction.
func (s *Service) deliverLocal(ctx context.Context, sender id.UserID, typ string, messages map[id.UserID]map[id.DeviceID]json.RawMessage, marker table.Op) error {
	var targets []target
	for u, byDevice := range messages {
		if !s.isLocal(u) || len(byDevice) == 0 {
			continue
		}
		var devs []id.DeviceID
		if s.Devices != nil {
			var err error
			if devs, err = s.Devices(ctx, u); err != nil {
				return err
			}
		}
		known := map[id.DeviceID]bool{}
		for _, d := range devs {
			known[d] = true
		}
		add := func(d id.DeviceID, content json.RawMessage) {
			m, _ := json.Marshal(ToDeviceMessage{Sender: sender, Type: typ, Content: content})
			targets = append(targets, target{u, d, m})
		}
		if all, ok := byDevice["*"]; ok {
			for _, d := range devs {
				add(d, all)
			}
			continue
		}
		for d, content := range byDevice {
			if known[d] {
				add(d, content)
			}
		}
	}
	const chunk = table.MaxTxItems - 1
	for start := 0; start < len(targets) || start == 0; start += chunk {
		part := targets[start:min(start+chunk, len(targets))]
		last := start+chunk >= len(targets)
		done, err := s.deliver(ctx, part, marker, last)
		if err != nil || done {
			return err
		}
	}
	return nil
}

// deliver commits one part of a send; done reports that the transaction id
// was already recorded (a concurrent duplicate won), so nothing was sent.
func (s *Service) deliver(ctx context.Context, part []target, marker table.Op, withMarker bool) (done bool, err error) {
	for attempt := 0; attempt < 10; attempt++ {
		streams := make([]*stream.Stream, len(part))
		positions := make([]int64, len(part))
		var ops []table.Op
		for i, t := range part {
			streams[i] = s.ToDeviceStream(t.user, t.device)
			p, err := streams[i].Allocate(ctx)
			if err != nil {
				s.voidAll(ctx, streams[:i], positions[:i])
				return false, err
			}
			positions[i] = p
			ops = append(ops, streams[i].ClaimOp(p, t.msg))
		}
		if withMarker {
			ops = append(ops, marker)
		}
		err := s.T.Transact(ctx, ops)
		var txe *table.TxError
		switch {
		case err == nil:
			if s.NotifyMany != nil {
				names := make([]string, len(streams))
				for i, st := range streams {
					names[i] = st.Name
				}
				s.NotifyMany(names)
				return false, nil
			}
			for _, st := range streams {
				s.notify(st.Name)
			}
			return false, nil
		case errors.As(err, &txe) && txe.Index == len(part):
			s.voidAll(ctx, streams, positions)
			return true, nil // the marker exists: a duplicate request got there first
		case errors.As(err, &txe), errors.Is(err, table.ErrConflict):
			s.voidAll(ctx, streams, positions) // a slot was voided by a reader: retry
		default:
			s.voidAll(ctx, streams, positions)
			return false, err
		}
	}
	return false, fmt.Errorf("to-device delivery: too many retries")
}

func (s *Service) voidAll(ctx context.Context, streams []*stream.Stream, positions []int64) {
	for i, st := range streams {
		_ = st.Void(ctx, positions[i])
	}
}

// AckToDevice records that the device has received everything up to
// position upTo of its inbox and deletes those messages. It returns the
// position to read the inbox after: the larger of upTo and what was
// acknowledged before (an old since token must not resurrect deleted slots).
func (s *Service) AckToDevice(ctx context.Context, u id.UserID, d id.DeviceID, upTo int64) (int64, error) {
	k := ackKey(u, d)
	for attempt := 0; attempt < 10; attempt++ {
		var acked, version int64
		cond := table.IfNotExists()
		it, err := s.T.Get(ctx, k)
		switch {
		case errors.Is(err, table.ErrNotFound):
		case err != nil:
			return 0, err
		default:
			acked, version, cond = it.Num, it.Version, table.IfVersion(it.Version)
		}
		if upTo <= acked {
			return acked, nil
		}
		if err := s.ToDeviceStream(u, d).Trim(ctx, acked, upTo); err != nil {
			return 0, err
		}
		err = s.T.Put(ctx, table.Item{PK: k.PK, SK: k.SK, Num: upTo, Version: version + 1}, cond)
		if errors.Is(err, table.ErrConditionFailed) {
			continue
		}
		return upTo, err
	}
	return 0, fmt.Errorf("to-device acknowledgement: too many retries")
}

// ToDevice reads up to limit messages after position after. next is the
// position a later sync should continue after.
func (s *Service) ToDevice(ctx context.Context, u id.UserID, d id.DeviceID, after int64, limit int) (msgs []ToDeviceMessage, next int64, err error) {
	if limit <= 0 {
		return nil, after, nil
	}
	entries, next, err := s.ToDeviceStream(u, d).Read(ctx, after, limit)
	if err != nil {
		return nil, after, err
	}
	for _, e := range entries {
		var m ToDeviceMessage
		if err := json.Unmarshal(e.Data, &m); err != nil {
			return nil, after, err
		}
		msgs = append(msgs, m)
	}
	return msgs, next, nil
}
