package federation

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
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

// SendEDU queues an EDU for each destination (our own server name is
// skipped). Delivery rides the federation sender's transactions.
func (s *Service) SendEDU(ctx context.Context, destinations []string, typ string, content any) error {
	return errors.New("federation: EDU delivery is being built")
}
