// Package ephemeral holds the data that lives beside the room timeline
// rather than in it: typing notifications, read receipts and send-to-device
// messages.
//
// Each kind has its own stream (core/stream) so /sync can read "what changed
// after position P" exactly once per change, with concurrent writers on any
// number of machines:
//
//   - "receipts": one entry per receipt that moved (room, user, type, thread, event);
//   - "typing": one entry per change of a room's typing list (the list itself
//     lives in the typing items, which expire);
//   - "todevice#<user>\x1f<device>": one stream per device, an inbox whose
//     entries are the messages; acknowledged entries are deleted.
package ephemeral

import (
	"context"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/stream"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Stream names.
const (
	ReceiptsStream       = "receipts"
	TypingStream         = "typing"
	ToDeviceStreamPrefix = "todevice#"
)

// Service stores and reads ephemeral data.
type Service struct {
	T          table.Table
	ServerName string
	Now        func() time.Time
	// Receipts and Typing are the global streams.
	Receipts *stream.Stream
	Typing   *stream.Stream
	// Devices lists a local user's device ids (to deliver to-device
	// messages addressed to "*", and to drop those to unknown devices).
	Devices func(ctx context.Context, u id.UserID) ([]id.DeviceID, error)
	// Notify, if set, is called after a change is committed to the named
	// stream (wakes /sync waiters in this process).
	Notify func(stream string)
	// NotifyMany, if set, is called instead of Notify after one commit
	// that changed several streams (a to-device send to many devices), so
	// that what the notifier does per change happens once.
	NotifyMany func(streams []string)
	// OnLocalTyping and OnLocalReceipt, if set, are called after a local
	// user's typing notice or public receipt is committed (the federation
	// EDUs to the room's other servers go out from them; remote.go).
	OnLocalTyping  func(ctx context.Context, r id.RoomID, u id.UserID, typing bool, timeout time.Duration)
	OnLocalReceipt func(ctx context.Context, rc Receipt)
	// OnTypingChanged and OnReceipt, if set, are called after any change
	// of a room's typing list (a local or remote user, or an expiry) and
	// after any receipt is committed, private ones included (application
	// services' ephemeral data leaves through them).
	OnTypingChanged func(ctx context.Context, r id.RoomID)
	OnReceipt       func(ctx context.Context, rc Receipt)
	// SendEDU, if set, queues an EDU for other servers: to-device
	// messages for their users leave through it (todevice.go).
	SendEDU func(ctx context.Context, destinations []string, typ string, content any) error
}

// New builds the service.
func New(t table.Table, serverName string, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{T: t, ServerName: serverName, Now: now,
		Receipts: &stream.Stream{T: t, Name: ReceiptsStream, Now: now},
		Typing:   &stream.Stream{T: t, Name: TypingStream, Now: now},
	}
}

func (s *Service) notify(name string) {
	if s.Notify != nil {
		s.Notify(name)
	}
}

func (s *Service) isLocal(u id.UserID) bool {
	_, server, err := u.Parse()
	return err == nil && server == s.ServerName
}

func roomPK(r id.RoomID) string { return "room#" + string(r) }
