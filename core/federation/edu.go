package federation

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/queue"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// EDUHandler receives one EDU of a registered type from a remote server
// (origin is the authenticated sending server).
type EDUHandler func(ctx context.Context, origin string, content json.RawMessage) error

// eduHandlers maps EDU types to their handlers; other types are ignored as
// the spec allows.
type eduHandlers struct {
	mu sync.RWMutex
	m  map[string]EDUHandler
}

// HandleEDU registers the handler for EDUs of type typ received in /send
// transactions. Registering a type twice replaces the handler.
func (s *Service) HandleEDU(typ string, fn EDUHandler) {
	s.edus.mu.Lock()
	defer s.edus.mu.Unlock()
	if s.edus.m == nil {
		s.edus.m = map[string]EDUHandler{}
	}
	s.edus.m[typ] = fn
}

// processEDUs hands each EDU of a transaction to its handler. EDUs are
// ephemeral: one that fails is logged and dropped, it does not fail the
// transaction.
func (s *Service) processEDUs(ctx context.Context, origin string, raws []json.RawMessage) {
	for _, raw := range raws {
		var e struct {
			Type    string          `json:"edu_type"`
			Content json.RawMessage `json:"content"`
		}
		if err := json.Unmarshal(raw, &e); err != nil || e.Type == "" {
			s.Log.Info("dropping malformed EDU", "origin", origin)
			continue
		}
		s.edus.mu.RLock()
		fn := s.edus.m[e.Type]
		s.edus.mu.RUnlock()
		if fn == nil {
			continue
		}
		if err := fn(ctx, origin, e.Content); err != nil {
			s.Log.Info("EDU not applied", "origin", origin, "type", e.Type, "err", err)
		}
	}
}

// SendEDU queues an EDU for each destination (our own server name, invalid
// names and repeats are skipped). Delivery rides the federation sender's
// transactions: each destination gets an EDU outbox item and a wake-up
// message, exactly like a PDU, so an EDU survives a destination being down
// (typing notices excepted: they expire after a minute, being worthless
// late). With no FederationQueue configured nothing is sent.
func (s *Service) SendEDU(ctx context.Context, destinations []string, typ string, content any) error {
	if typ == "" {
		return errors.New("federation: EDU without a type")
	}
	c, err := json.Marshal(content)
	if err != nil {
		return fmt.Errorf("federation: EDU content: %w", err)
	}
	raw, err := json.Marshal(struct {
		Type    string          `json:"edu_type"`
		Content json.RawMessage `json:"content"`
	}{typ, c})
	if err != nil {
		return err
	}
	var dests []string
	for _, d := range destinations {
		if d != s.ServerName && id.ValidateServerName(d) && !slices.Contains(dests, d) {
			dests = append(dests, d)
		}
	}
	return s.Sender.enqueueEDU(ctx, dests, typ, raw)
}

// EDU outbox items: dest#<server> / edu#<%016d µs>#<random>, d = the EDU
// as sent (edu_type and content), ttl for types not worth sending late.
const eduPrefix = "edu#"

// maxEDUBytesPerTxn bounds the EDU bytes of one transaction (besides the
// spec's 100), so to-device batches cannot make a request receivers refuse.
const maxEDUBytesPerTxn = 1 << 20

// eduStaleAfter lists the EDU types dropped when not delivered in time.
var eduStaleAfter = map[string]time.Duration{
	EDUTyping: time.Minute,
}

// enqueueEDU writes the EDU to each destination's outbox and wakes the
// sender for it.
func (sn *Sender) enqueueEDU(ctx context.Context, dests []string, typ string, raw []byte) error {
	if sn.Q == nil || len(dests) == 0 {
		return nil
	}
	now := sn.Fed.now()
	var ttl int64
	if d, ok := eduStaleAfter[typ]; ok {
		ttl = now.Add(d).Unix()
	}
	msgs := make([]queue.Message, 0, len(dests))
	// The outbox items are written in transactions of many destinations
	// (one round trip for a room's servers, not one each), bounded by the
	// table's per-transaction limits.
	var ops []table.Op
	size := 0
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		err := sn.Fed.T.Transact(ctx, ops)
		ops, size = nil, 0
		return err
	}
	for _, d := range dests {
		// Time first, so a destination's EDUs go out in the order they were
		// made (across processes, as well as their clocks agree).
		sk := fmt.Sprintf("%s%016d#%s", eduPrefix, now.UnixMicro(), randomHex(6))
		it := table.Item{PK: destPK(d), SK: sk, Data: raw, TTL: ttl}
		if n := table.ItemSize(it); len(ops) == table.MaxTxItems || size+n > table.MaxTxBytes {
			if err := flush(); err != nil {
				return err
			}
		}
		ops = append(ops, table.Put(it, table.IfNotExists()))
		size += table.ItemSize(it)
		msgs = append(msgs, sn.wake(d, sk))
	}
	if err := flush(); err != nil {
		return err
	}
	sn.Fed.Log.Debug("queued EDU for federation", "type", typ, "destinations", len(msgs))
	return sn.Q.Send(ctx, msgs...)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
