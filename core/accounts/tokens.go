package accounts

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// LoginTokenLifetime is how long a token from /login/get_token is valid
// (the spec recommends two minutes).
const LoginTokenLifetime = 2 * time.Minute

// RegistrationNonceLifetime is how long a shared-secret registration nonce
// may be used.
const RegistrationNonceLifetime = 2 * time.Minute

func loginTokenKey(hash string) table.Key {
	return table.Key{PK: "logintoken#" + hash, SK: "logintoken"}
}

type loginTokenRecord struct {
	UserID    id.UserID `json:"user_id"`
	ExpiresMS int64     `json:"expires_ts"`
}

// ttlAfter is the item TTL (Unix seconds) for something that stops being
// valid at t: rounded up, so the item never disappears before t.
func ttlAfter(t time.Time) int64 { return t.Add(time.Second - 1).Unix() }

// CreateLoginToken issues a single-use token for m.login.token login as u.
// Only its hash is stored, with a TTL.
func (s *Service) CreateLoginToken(ctx context.Context, u id.UserID, lifetime time.Duration) (string, error) {
	tok := NewToken("syl_")
	exp := s.now().Add(lifetime)
	data, _ := json.Marshal(loginTokenRecord{UserID: u, ExpiresMS: exp.UnixMilli()})
	k := loginTokenKey(HashToken(tok))
	if err := s.T.Put(ctx, table.Item{PK: k.PK, SK: k.SK, Data: data, TTL: ttlAfter(exp)}, table.IfNotExists()); err != nil {
		return "", err
	}
	return tok, nil
}

// ConsumeLoginToken spends a login token and returns whose it was. A token
// that is unknown, expired or already spent is M_FORBIDDEN (as the spec
// asks for m.login.token); of two concurrent uses only one succeeds, since
// the token is spent with a conditional delete.
func (s *Service) ConsumeLoginToken(ctx context.Context, tok string) (id.UserID, error) {
	invalid := httpapi.Forbidden("invalid or expired login token")
	k := loginTokenKey(HashToken(tok))
	it, err := s.T.Get(ctx, k)
	if errors.Is(err, table.ErrNotFound) {
		return "", invalid
	}
	if err != nil {
		return "", err
	}
	var rec loginTokenRecord
	if err := json.Unmarshal(it.Data, &rec); err != nil {
		return "", err
	}
	if rec.ExpiresMS <= s.now().UnixMilli() {
		_ = s.T.Delete(ctx, k, table.Cond{})
		return "", invalid
	}
	if err := s.T.Delete(ctx, k, table.IfExists()); err != nil {
		if errors.Is(err, table.ErrConditionFailed) {
			return "", invalid
		}
		return "", err
	}
	return rec.UserID, nil
}

func nonceKey(nonce string) table.Key { return table.Key{PK: "regnonce#" + nonce, SK: "regnonce"} }

// NewRegistrationNonce stores and returns a fresh nonce for shared-secret
// registration.
func (s *Service) NewRegistrationNonce(ctx context.Context) (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	nonce := hex.EncodeToString(b[:])
	k := nonceKey(nonce)
	ttl := ttlAfter(s.now().Add(RegistrationNonceLifetime))
	if err := s.T.Put(ctx, table.Item{PK: k.PK, SK: k.SK, TTL: ttl}, table.IfNotExists()); err != nil {
		return "", err
	}
	return nonce, nil
}

// ConsumeRegistrationNonce spends a nonce: false if it is unknown, expired or
// already spent (a conditional delete, so a nonce works exactly once).
func (s *Service) ConsumeRegistrationNonce(ctx context.Context, nonce string) (bool, error) {
	if nonce == "" || len(nonce) > 256 {
		return false, nil
	}
	err := s.T.Delete(ctx, nonceKey(nonce), table.IfExists())
	if errors.Is(err, table.ErrConditionFailed) {
		return false, nil
	}
	return err == nil, err
}
