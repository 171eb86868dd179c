// Package signing holds the server's ed25519 signing key: created once on
// first start, kept in a Store, and loaded by every later start (and every
// Lambda instance) so they all sign with the same key.
package signing

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"

	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// Key is the server's signing key.
type Key = federation.SigningKey

// ErrExists is returned by Store.Create when a key is already stored.
var ErrExists = errors.New("signing: a key is already stored")

// Store keeps the key in Synapse's text format ("ed25519 <id> <seed>").
type Store interface {
	// Load returns the stored key text, or "" if none is stored.
	Load(ctx context.Context) (string, error)
	// Create stores the text only if no key is stored yet (ErrExists otherwise).
	Create(ctx context.Context, text string) error
}

// Generate makes a new key with an id of the spec's [a-zA-Z0-9_] characters.
func Generate() (*Key, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	for i := range b {
		b[i] = alnum[int(b[i])%len(alnum)]
	}
	return &Key{
		ID:   id.NewKeyID(id.KeyAlgorithmEd25519, "a_"+string(b[:])),
		Pub:  id.SigningKey(base64.RawStdEncoding.EncodeToString(pub)),
		Priv: priv,
	}, nil
}

// LoadOrCreate returns the stored key, creating and storing one if there is
// none. Two processes starting at once agree: only one Create wins and the
// other loads the winner's key.
func LoadOrCreate(ctx context.Context, s Store) (*Key, error) {
	for range 3 {
		text, err := s.Load(ctx)
		if err != nil {
			return nil, fmt.Errorf("signing key: %w", err)
		}
		if text != "" {
			k, err := federation.ParseSynapseKey(text)
			if err != nil {
				return nil, fmt.Errorf("signing key: %w", err)
			}
			return k, nil
		}
		k, err := Generate()
		if err != nil {
			return nil, err
		}
		err = s.Create(ctx, k.SynapseString())
		if err == nil {
			return k, nil
		}
		if !errors.Is(err, ErrExists) {
			return nil, fmt.Errorf("signing key: %w", err)
		}
	}
	return nil, errors.New("signing key: could not load or create")
}

// TableStore keeps the key as one item of the table (used on AWS, where
// DynamoDB encrypts it at rest and the functions' IAM roles already reach
// the table; a separate secret store would add a call to every cold start).
type TableStore struct{ T table.Table }

var keyItem = table.Key{PK: "server", SK: "signing_key"}

// Load implements Store.
func (s TableStore) Load(ctx context.Context) (string, error) {
	it, err := s.T.Get(ctx, keyItem)
	if errors.Is(err, table.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return string(it.Data), nil
}

// Create implements Store.
func (s TableStore) Create(ctx context.Context, text string) error {
	err := s.T.Put(ctx, table.Item{PK: keyItem.PK, SK: keyItem.SK, Data: []byte(text)}, table.IfNotExists())
	if errors.Is(err, table.ErrConditionFailed) {
		return ErrExists
	}
	return err
}

// ErrChanged is returned by Replacer.Replace when the stored key is no
// longer the one to replace (another process rotated it first).
var ErrChanged = errors.New("signing: the stored key changed")

// Replacer is a Store whose key can be replaced (key rotation).
type Replacer interface {
	// Replace stores text in place of old, only while old is the stored
	// key (ErrChanged otherwise).
	Replace(ctx context.Context, old, text string) error
}

// Replace implements Replacer with a version-conditioned write.
func (s TableStore) Replace(ctx context.Context, old, text string) error {
	it, err := s.T.Get(ctx, keyItem)
	if err != nil {
		return err
	}
	if string(it.Data) != old {
		return ErrChanged
	}
	err = s.T.Put(ctx, table.Item{PK: keyItem.PK, SK: keyItem.SK, Data: []byte(text), Version: it.Version + 1}, table.IfVersion(it.Version))
	if errors.Is(err, table.ErrConditionFailed) {
		return ErrChanged
	}
	return err
}
