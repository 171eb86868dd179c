package server

import (
	"context"
	"time"

	"github.com/cirrus-matrix/cirrus/core/clientapi"
	"github.com/cirrus-matrix/cirrus/core/clientsync"
	"github.com/cirrus-matrix/cirrus/core/keys"
	"github.com/cirrus-matrix/cirrus/core/rooms"
)

// withKeys adds end-to-end encryption support to a built server: the key
// store, its endpoints, the hook that drops deleted devices' keys, and the
// room hook that records membership changes for device-list tracking.
func (s *Server) withKeys() *Server {
	ks := keys.New(s.deps.Table, s.cfg.Client.ServerName, s.rooms, s.accounts, s.deps.Log, s.deps.Now)
	s.keys = ks
	s.client.DeviceKeys = ks
	s.keysAPI = &clientapi.KeysAPI{API: s.client, Keys: ks, TokenPos: deviceListPos}
	prev := s.rooms.OnPersist
	s.rooms.OnPersist = func(ev *rooms.Event) {
		if prev != nil {
			prev(ev)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ks.OnEvent(ctx, ev)
	}
	return s
}

// deviceListPos reads the device-list position from a /sync token (its
// last part) or from Cirrus's own "d<pos>" form.
func deviceListPos(tok string) (int64, bool) {
	if t, ok := clientsync.ParseToken(tok); ok {
		return t.DeviceLists, true
	}
	return keys.ParseToken(tok)
}

// Keys is the end-to-end key store (for the sync code: one-time key
// counts, fallback key types and device-list changes).
func (s *Server) Keys() *keys.Service { return s.keys }
