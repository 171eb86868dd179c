package accounts

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Account suspension and locking (spec: "Account moderation"). The flags
// live on the account item; every access token record carries a copy, so
// authentication stays one read. A change writes the account first
// (bumping its version), then each of the user's tokens. A login or
// refresh reads the account and checks its version in the same
// transaction that creates the token, so a token created concurrently
// with a change either carries the new flags or is retried; one created
// before it is found through its device by the token pass.

// moderationFlags are the account flags tokens copy.
type moderationFlags struct {
	Suspended, Locked bool
}

// LockedError is the answer to a locked account's requests (401 with
// soft_logout: the client keeps its session for when the lock is lifted).
func LockedError() *httpapi.Error {
	return (&httpapi.Error{Status: http.StatusUnauthorized, Code: "M_USER_LOCKED", Message: "this account has been locked"}).With("soft_logout", true)
}

// SuspendedError is the answer to an action a suspended account may not take.
func SuspendedError() *httpapi.Error {
	return &httpapi.Error{Status: http.StatusForbidden, Code: "M_USER_SUSPENDED", Message: "you cannot perform this action while suspended"}
}

// loginFlags reads the account's flags into lo and returns the check that
// the account is unchanged, for the token's transaction. A locked account
// gets no new token. Users without an account item (none today) get no
// flags and no check.
func (s *Service) loginFlags(ctx context.Context, u id.UserID, lo *LoginOptions) ([]table.Op, error) {
	a, v, err := s.getAccountItem(ctx, u)
	var he *httpapi.Error
	if errors.As(err, &he) && he.Code == "M_NOT_FOUND" {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if a.Locked {
		return nil, LockedError()
	}
	lo.flags = moderationFlags{Suspended: a.Suspended, Locked: a.Locked}
	return []table.Op{table.Check(accountKey(u), table.IfVersion(v))}, nil
}

// SetSuspended suspends or unsuspends a local account.
func (s *Service) SetSuspended(ctx context.Context, u id.UserID, suspended bool) error {
	return s.setFlags(ctx, u, func(f *moderationFlags) { f.Suspended = suspended })
}

// SetLocked locks or unlocks a local account. Locked accounts keep their
// tokens (the spec asks servers not to log them out).
func (s *Service) SetLocked(ctx context.Context, u id.UserID, locked bool) error {
	return s.setFlags(ctx, u, func(f *moderationFlags) { f.Locked = locked })
}

func (s *Service) setFlags(ctx context.Context, u id.UserID, change func(*moderationFlags)) error {
	var flags moderationFlags
	err := s.updateAccount(ctx, u, func(a *Account) error {
		if a.Deactivated {
			return httpapi.NotFound("no such user")
		}
		flags = moderationFlags{Suspended: a.Suspended, Locked: a.Locked}
		change(&flags)
		a.Suspended, a.Locked = flags.Suspended, flags.Locked
		return nil
	})
	if err != nil {
		return err
	}
	devs, err := s.Devices(ctx, u)
	if err != nil {
		return err
	}
	for _, d := range devs {
		if d.TokenKey == "" {
			continue
		}
		if err := s.setTokenFlags(ctx, d.TokenKey, u, flags); err != nil {
			return err
		}
	}
	return s.reindexDirectory(ctx, u) // locked users are not listed
}

// setTokenFlags copies the flags into one token record (gone: nothing to do).
func (s *Service) setTokenFlags(ctx context.Context, tk string, u id.UserID, f moderationFlags) error {
	for range maxAttempts {
		it, err := s.T.Get(ctx, tokenKey(tk))
		if errors.Is(err, table.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		var rec tokenRecord
		if err := json.Unmarshal(it.Data, &rec); err != nil {
			return err
		}
		if rec.UserID != u || (rec.Suspended == f.Suspended && rec.Locked == f.Locked) {
			return nil
		}
		rec.Suspended, rec.Locked = f.Suspended, f.Locked
		old := it.Version
		it.Data, _ = json.Marshal(rec)
		it.Version = old + 1
		err = s.T.Put(ctx, it, table.IfVersion(old))
		if errors.Is(err, table.ErrConditionFailed) {
			continue // touched (last seen) or deleted meanwhile: read again
		}
		return err
	}
	return table.ErrConflict
}

type userAgentKey struct{}

// WithUserAgent returns a context that carries the request's User-Agent,
// recorded with a device's last-seen address.
func WithUserAgent(ctx context.Context, ua string) context.Context {
	if len(ua) > 512 {
		ua = strings.ToValidUTF8(ua[:512], "") // bounded: it is stored per device
	}
	return context.WithValue(ctx, userAgentKey{}, ua)
}

// UserAgent is the User-Agent WithUserAgent stored ("" if none).
func UserAgent(ctx context.Context) string {
	ua, _ := ctx.Value(userAgentKey{}).(string)
	return ua
}
