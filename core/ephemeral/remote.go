package ephemeral

import (
	"context"
	"fmt"
	"time"

	"maunium.net/go/mautrix/id"
)

// RemoteTypingTimeout is how long a remote user's typing notice lasts
// without another one: the m.typing EDU carries no timeout, and servers
// repeat it while their user keeps typing (Synapse every 40 s, for a
// minute each).
const RemoteTypingTimeout = time.Minute

// SetRemoteTyping records a typing notice received from another server (its
// user's, checked by the caller) for RemoteTypingTimeout. It feeds the same
// items and stream as local typing, so /sync shows it and lets it expire.
func (s *Service) SetRemoteTyping(ctx context.Context, r id.RoomID, u id.UserID, typing bool) error {
	if s.isLocal(u) {
		return fmt.Errorf("ephemeral: %s is a local user", u)
	}
	return s.SetTyping(ctx, r, u, typing, RemoteTypingTimeout)
}

// PutRemoteReceipt records a receipt received from another server (its
// user's, checked by the caller), keeping the sender's timestamp. Like a
// local receipt it only moves forward and lands in the receipts stream.
func (s *Service) PutRemoteReceipt(ctx context.Context, rc Receipt) error {
	if s.isLocal(rc.UserID) {
		return fmt.Errorf("ephemeral: %s is a local user", rc.UserID)
	}
	if rc.Type == ReceiptReadPrivate {
		return fmt.Errorf("ephemeral: private receipts do not come from other servers")
	}
	return s.putReceipt(ctx, rc)
}

// localTyping reports a local user's typing change to OnLocalTyping.
func (s *Service) localTyping(ctx context.Context, r id.RoomID, u id.UserID, typing bool, timeout time.Duration) {
	if s.OnLocalTyping != nil && s.isLocal(u) {
		s.OnLocalTyping(ctx, r, u, typing, timeout)
	}
}

// localReceipt reports a local user's public receipt to OnLocalReceipt
// (private receipts never leave the server).
func (s *Service) localReceipt(ctx context.Context, rc Receipt) {
	if s.OnLocalReceipt != nil && s.isLocal(rc.UserID) && !rc.Private() {
		s.OnLocalReceipt(ctx, rc)
	}
}
