package media

import (
	"bytes"
	"context"
	"errors"
	"io"
	"time"

	"github.com/cirrus-matrix/cirrus/core/blob"
)

// Content is something to send to a client: stored bytes (Key), bytes just
// made (Data), or a blob already opened (Body).
type Content struct {
	Key         string
	Data        []byte
	Body        io.ReadCloser
	Size        int64
	ContentType string
	// Filename goes into Content-Disposition ("" for none).
	Filename string
	// ETag identifies the bytes (they never change under one key).
	ETag string
}

// Close releases an opened body.
func (c *Content) Close() {
	if c.Body != nil {
		c.Body.Close()
		c.Body = nil
	}
}

// Download describes a record's bytes.
func (s *Service) Download(r *Record) *Content {
	ct := r.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	return &Content{Key: r.Blob, Size: r.Size, ContentType: ct, Filename: r.Filename, ETag: `"` + r.SHA256 + `"`}
}

// Open returns the content's bytes (Body or Data as they are, else the blob).
func (s *Service) Open(ctx context.Context, c *Content) (io.ReadCloser, error) {
	if c.Body != nil {
		b := c.Body
		c.Body = nil
		return b, nil
	}
	if c.Data != nil {
		return io.NopCloser(bytes.NewReader(c.Data)), nil
	}
	rc, _, err := s.blobs.Get(ctx, c.Key)
	return rc, err
}

// RedirectTTL is how long a download redirect's presigned URL works.
const RedirectTTL = time.Hour

// RedirectURL returns a presigned URL for stored content when the blob
// store can make one that carries the right headers; ok is false when the
// content must be served directly.
func (s *Service) RedirectURL(ctx context.Context, c *Content, disposition, cacheControl string) (url string, ok bool, err error) {
	if c.Key == "" {
		return "", false, nil
	}
	p, can := s.blobs.(HeaderPresigner)
	if !can {
		return "", false, nil
	}
	u, err := p.PresignGetAs(ctx, c.Key, RedirectTTL, c.ContentType, disposition, cacheControl)
	if errors.Is(err, blob.ErrNoPresign) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return u, true, nil
}

// ShouldRedirect reports whether content of this size is sent as a redirect
// (when allowed and possible) rather than through this process.
func (s *Service) ShouldRedirect(size int64) bool {
	return s.cfg.RedirectAbove > 0 && size > s.cfg.RedirectAbove
}

// TooLargeToServe reports whether content of this size cannot pass through
// this process (the Lambda payload limit).
func (s *Service) TooLargeToServe(size int64) bool {
	return s.cfg.DirectLimit > 0 && size > s.cfg.DirectLimit
}
