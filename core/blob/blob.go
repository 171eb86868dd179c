// Package blob is the port for large opaque objects (media): put, get, head,
// delete, and presigned URLs where the engine has them. infra/s3 adapts S3;
// infra/localfs keeps objects in a directory. Both pass core/blob/blobtest.
package blob

import (
	"context"
	"errors"
	"io"
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
)

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
	// contentType for ttl, or ErrNoPresign.
	PresignPut(ctx context.Context, key string, size int64, contentType string, ttl time.Duration) (string, error)
}
