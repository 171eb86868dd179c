// Package keyfile keeps the server's signing key in a file of the data
// directory (the embedded deployment), in Synapse's signing key format.
package keyfile

import (
	"context"
	"errors"
	"os"
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

// Create implements signing.Store: O_EXCL makes the first creator win.
func (s Store) Create(_ context.Context, text string) error {
	f, err := os.OpenFile(s.Path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return signing.ErrExists
	}
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text + "\n"); err != nil {
		f.Close()
		os.Remove(s.Path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
