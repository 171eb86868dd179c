// Package keyfile keeps the server's signing key in a file of the data
// directory (the embedded deployment), in Synapse's signing key format.
package keyfile

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"

	"github.com/cirrus-matrix/cirrus/core/signing"
)

// Store is a signing.Store on one file.
type Store struct{ Path string }

// Load implements signing.Store.
func (s Store) Load(context.Context) (string, error) {
	b, err := os.ReadFile(s.Path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	return strings.TrimSpace(string(b)), err
}

// Create implements signing.Store. The key is written to a temporary file
// first and then hard-linked into place: the link is atomic and fails if a
// key already exists, so a concurrent Load never sees a half-written file
// and exactly one creator wins.
func (s Store) Create(_ context.Context, text string) error {
	return s.writeThen(text, func(tmp string) error {
		if err := os.Link(tmp, s.Path); err != nil {
			if errors.Is(err, os.ErrExist) {
				return signing.ErrExists
			}
			return err
		}
		return nil
	})
}

// Replace implements signing.Replacer: the new key is written to a
// temporary file and renamed over the old one (atomic; the embedded
// deployment is one process, so the check before it cannot race).
func (s Store) Replace(ctx context.Context, old, text string) error {
	cur, err := s.Load(ctx)
	if err != nil {
		return err
	}
	if cur != strings.TrimSpace(old) {
		return signing.ErrChanged
	}
	return s.writeThen(text, func(tmp string) error { return os.Rename(tmp, s.Path) })
}

// writeThen writes text to a synced, private temporary file next to the
// key and hands its name to place, which moves it into position (the
// temporary file is removed afterwards if it is still there).
func (s Store) writeThen(text string, place func(tmp string) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(s.Path), ".signing-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.WriteString(text + "\n"); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return place(tmp.Name())
}
