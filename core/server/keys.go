package server

import (
	"context"
	"time"

	"github.com/cirrus-matrix/cirrus/core/clientapi"
	"github.com/cirrus-matrix/cirrus/core/clientsync"
	"github.com/cirrus-matrix/cirrus/core/dehydrated"
	"github.com/cirrus-matrix/cirrus/core/ephemeral"
	"github.com/cirrus-matrix/cirrus/core/federation"
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

// withFederatedE2EE adds dehydrated devices (MSC3814) and connects
// end-to-end encryption to other servers: remote users' keys through the
// federation client, our users' device-list changes and to-device messages
// out as EDUs, theirs in.
func (s *Server) withFederatedE2EE() *Server {
	if s.keys == nil {
		return s
	}
	dd := &dehydrated.Service{T: s.deps.Table, Accounts: s.accounts, Keys: s.keys}
	if s.userDataAPI != nil {
		dd.Inbox = s.userDataAPI.Ephemeral
	}
	s.dehydratedAPI = &clientapi.DehydratedAPI{Devices: dd}
	if s.fed == nil {
		return s
	}
	uk := &federation.UserKeys{Fed: s.fed, Keys: s.keys}
	s.keys.Fed = uk
	s.keys.Servers = s.fed.RoomDestinations
	uk.RegisterEDUs()
	if s.userDataAPI != nil && s.userDataAPI.Ephemeral != nil {
		eph := s.userDataAPI.Ephemeral
		eph.SendEDU = s.fed.SendEDU
		s.fed.HandleEDU(ephemeral.EDUDirectToDevice, eph.ReceiveToDevice)
	}
	return s
}

// userKeysFed is the server-server side of user keys (routes; nil-safe).
func (s *Server) userKeysFed() *federation.UserKeys {
	return &federation.UserKeys{Fed: s.fed, Keys: s.keys}
}

// msc3814 is the unstable prefix of the dehydrated device endpoints.
const msc3814 = "/_matrix/client/unstable/org.matrix.msc3814.v1"

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
