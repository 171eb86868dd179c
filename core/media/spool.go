package media

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
)

// spooled is an upload's body held in a temporary file: its size and
// SHA-256 are known before anything is stored, so a short, long or failed
// body stores nothing, and equal contents are stored once.
type spooled struct {
	f      *os.File
	name   string // set when the file could not be unlinked at once
	Size   int64
	SHA256 string
}

// spool copies r to a temporary file in dir, hashing it. declared is the
// Content-Length (-1 if unknown); max is the upload limit.
func spool(ctx context.Context, dir string, r io.Reader, declared, limit int64) (*spooled, error) {
	if r == nil {
		r = eofReader{}
	}
	f, err := os.CreateTemp(dir, "cirrus-upload-*")
	if err != nil {
		return nil, fmt.Errorf("media: temporary file: %w", err)
	}
	// Unlinked at once where the OS allows: the file goes away with the
	// handle even if the process dies mid-upload.
	removed := os.Remove(f.Name()) == nil
	sp := &spooled{f: f}
	ok := false
	defer func() {
		if !ok {
			sp.Close()
			if !removed {
				os.Remove(f.Name())
			}
		}
	}()
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(f, h), io.LimitReader(ctxReader{ctx, r}, limit+1), make([]byte, 256<<10))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var he *httpapi.Error
		if errors.As(err, &he) {
			return nil, he
		}
		return nil, httpapi.BadRequest("could not read the upload (body ended early or broke off): %v", err)
	}
	if n > limit {
		return nil, tooLarge(limit)
	}
	if declared >= 0 && n != declared {
		return nil, httpapi.BadRequest("the body has %d bytes but Content-Length said %d", n, declared)
	}
	if !removed {
		// Keep the name so Close can remove it.
		sp.name = f.Name()
	}
	sp.Size = n
	sp.SHA256 = hex.EncodeToString(h.Sum(nil))
	ok = true
	return sp, nil
}

// rewind returns the file positioned at its start, limited to Size bytes.
func (s *spooled) rewind() (io.Reader, error) {
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return io.LimitReader(s.f, s.Size), nil
}

// file returns the spooled bytes as a ReadSeeker positioned at the start.
func (s *spooled) file() io.ReadSeeker {
	_, _ = s.f.Seek(0, io.SeekStart)
	return io.NewSectionReader(s.f, 0, s.Size)
}

// Close releases (and if needed removes) the temporary file.
func (s *spooled) Close() {
	s.f.Close()
	if s.name != "" {
		os.Remove(s.name)
	}
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
