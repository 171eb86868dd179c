// Package blob is the port for large opaque objects (media): put, get, head,
// delete, and presigned URLs where the engine has them. infra/s3 adapts S3;
// infra/localfs keeps objects in a directory. Both pass core/blob/blobtest.
package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Errors returned by blob stores.
var (
	ErrNotFound = errors.New("blob: not found")
	// ErrShortBody means the reader ended before (or continued past) the
	// declared size; nothing was stored.
	ErrShortBody = errors.New("blob: body does not match declared size")
	// ErrNoPresign means the engine cannot make presigned URLs (a local
	// directory): the caller serves or accepts the bytes itself.
	ErrNoPresign = errors.New("blob: presigned URLs not supported")
	// ErrInvalidKey means the key breaks the syntax CheckKey enforces.
	ErrInvalidKey = errors.New("blob: invalid key")
)

// CheckKey enforces the key syntax every store shares: non-empty
// slash-separated segments of [A-Za-z0-9._-], none of them "." or "..", at
// most 1024 bytes in all.
func CheckKey(key string) error {
	if key == "" || len(key) > 1024 {
		return fmt.Errorf("%w %q", ErrInvalidKey, key)
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-' || c == '/') {
			return fmt.Errorf("%w %q", ErrInvalidKey, key)
		}
	}
	for seg := range strings.SplitSeq(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w %q", ErrInvalidKey, key)
		}
	}
	return nil
}

// Info describes a stored object.
type Info struct {
	Size        int64
	ContentType string
}

// Store is the port. Keys are slash-separated paths of [A-Za-z0-9._/-].
type Store interface {
	// Put stores exactly size bytes from r under key. The object becomes
	// visible only once complete: a failed or short upload leaves nothing.
	Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) error
	// Get opens the object (ErrNotFound if absent). The caller closes it.
	Get(ctx context.Context, key string) (io.ReadCloser, Info, error)
	// Head returns the object's info (ErrNotFound if absent).
	Head(ctx context.Context, key string) (Info, error)
	// Delete removes the object; deleting a missing object succeeds.
	Delete(ctx context.Context, key string) error
	// PresignGet returns a URL that serves the object for ttl, or ErrNoPresign.
	PresignGet(ctx context.Context, key string, ttl time.Duration) (string, error)
	// PresignPut returns a URL that accepts a PUT of exactly size bytes of
	// contentType for ttl, or ErrNoPresign. A negative size accepts any
	// length and an empty contentType any type (the uploader does not know
	// them yet); whoever reads such an object must check it.
	PresignPut(ctx context.Context, key string, size int64, contentType string, ttl time.Duration) (string, error)
}
