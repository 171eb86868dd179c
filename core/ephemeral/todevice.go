package ephemeral

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// SendToDevice delivers one message per addressed device ("*" = every device
// of the user). Messages for users of other servers are dropped (federation
// is not implemented), as are messages for devices that do not exist. A
// repeated (sender device, txnID) does nothing. Up to 99 devices the delivery
// is one transaction; beyond that it is split, with the transaction id
// recorded by the last part.
func (s *Service) SendToDevice(ctx context.Context, sender id.UserID, senderDevice id.DeviceID, txnID, typ string, messages map[id.UserID]map[id.DeviceID]json.RawMessage) error {
	tk := toDeviceTxnKey(sender, senderDevice, txnID)
	if _, err := s.T.Get(ctx, tk); err == nil {
		return nil
	} else if !errors.Is(err, table.ErrNotFound) {
		return err
	}
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
	marker := table.Put(table.Item{PK: tk.PK, SK: tk.SK, TTL: s.Now().Add(24 * time.Hour).Unix(), Data: []byte("1")}, table.IfNotExists())
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
