// Package localfs is a blob.Store kept in a local directory, for the
// all-in-one server.
//
// Layout: key "a/b/c" is the data file <dir>/a/b/c~blob with its content type
// in <dir>/a/b/c~meta. Keys cannot contain '~', so a key's directory (a/b)
// never collides with another key's files, and "a" and "a/b" coexist as they
// do in S3. Both files are written to temporary files in the same directory,
// synced, then renamed into place, so an object appears whole or not at all.
//
// Within one process a key's data and meta files change together under a lock,
// so readers never pair one version's bytes with another's content type.
// Several processes sharing one directory get whole objects, but a reader
// racing an overwrite of the same key may briefly see the new content type
// with the old bytes. A crash can leave "~tmp" files behind; they are never
// visible as objects.
package localfs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cirrus-matrix/cirrus/core/blob"
)

const (
	dataSuffix = "~blob"
	metaSuffix = "~meta"
	tmpSuffix  = "~tmp-*"
)

// Store is a blob.Store on a directory. It is safe for concurrent use.
type Store struct {
	root  string
	locks [64]sync.RWMutex
}

var _ blob.Store = (*Store)(nil)

// New returns a store rooted at dir, creating the directory if needed.
func New(dir string) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("localfs: %w", err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("localfs: %w", err)
	}
	return &Store{root: abs}, nil
}

// Dir returns the absolute directory the store keeps its objects in.
func (s *Store) Dir() string { return s.root }

type meta struct {
	ContentType string `json:"content_type"`
}

// paths returns the directory holding key's files and the key's last segment.
func (s *Store) paths(key string) (dir, base string) {
	segs := strings.Split(key, "/")
	return filepath.Join(append([]string{s.root}, segs[:len(segs)-1]...)...), segs[len(segs)-1]
}

func (s *Store) lock(key string) *sync.RWMutex {
	h := fnv.New32a()
	h.Write([]byte(key))
	return &s.locks[h.Sum32()%uint32(len(s.locks))]
}

// Put writes exactly size bytes from r under key. Nothing becomes visible
// unless all of them arrive and r then reports EOF.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) (err error) {
	if err := checkKey(key); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("localfs: negative size %d", size)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	dir, base := s.paths(key)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("localfs: put %q: %w", key, err)
	}

	dataTmp, err := writeTemp(dir, base, func(f *os.File) error { return copyExact(ctx, f, r, size) })
	if err != nil {
		return fmt.Errorf("localfs: put %q: %w", key, err)
	}
	defer func() {
		if err != nil {
			os.Remove(dataTmp)
		}
	}()
	mb, err := json.Marshal(meta{ContentType: contentType})
	if err != nil {
		return fmt.Errorf("localfs: put %q: %w", key, err)
	}
	metaTmp, err := writeTemp(dir, base, func(f *os.File) error { _, err := f.Write(mb); return err })
	if err != nil {
		return fmt.Errorf("localfs: put %q: %w", key, err)
	}
	defer func() {
		if err != nil {
			os.Remove(metaTmp)
		}
	}()
	if err := ctx.Err(); err != nil {
		return err
	}

	// Meta first: the data file's presence is what makes the object visible,
	// so a crash in between leaves at most an orphaned meta file.
	l := s.lock(key)
	l.Lock()
	err = os.Rename(metaTmp, filepath.Join(dir, base+metaSuffix))
	if err == nil {
		err = os.Rename(dataTmp, filepath.Join(dir, base+dataSuffix))
	}
	l.Unlock()
	if err != nil {
		return fmt.Errorf("localfs: put %q: %w", key, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("localfs: put %q: %w", key, err)
	}
	return nil
}

// writeTemp creates a temporary file next to base in dir, fills it with
// write, syncs and closes it, and returns its path. On error the file is gone.
func writeTemp(dir, base string, write func(*os.File) error) (string, error) {
	f, err := os.CreateTemp(dir, base+tmpSuffix)
	if err != nil {
		return "", err
	}
	err = write(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// copyExact copies exactly size bytes from r to w and checks that r has
// nothing more, honouring ctx between reads.
func copyExact(ctx context.Context, w io.Writer, r io.Reader, size int64) error {
	cr := ctxReader{ctx: ctx, r: r}
	n, err := io.Copy(w, io.LimitReader(cr, size))
	if err != nil {
		return err
	}
	if n < size {
		return fmt.Errorf("%w: got %d of %d bytes", blob.ErrShortBody, n, size)
	}
	var one [1]byte
	for {
		m, err := cr.Read(one[:])
		if m > 0 {
			return fmt.Errorf("%w: more than %d bytes", blob.ErrShortBody, size)
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// ctxReader fails reads once ctx is done.
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

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Get opens the object. The returned ReadCloser is the *os.File itself, so it
// also seeks (for http.ServeContent) and reads at offsets.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, blob.Info, error) {
	if err := checkKey(key); err != nil {
		return nil, blob.Info{}, err
	}
	dir, base := s.paths(key)
	l := s.lock(key)
	l.RLock()
	f, err := os.Open(filepath.Join(dir, base+dataSuffix))
	var ct string
	if err == nil {
		ct, err = readMeta(filepath.Join(dir, base+metaSuffix))
		if err != nil {
			f.Close()
		}
	}
	l.RUnlock()
	if err != nil {
		return nil, blob.Info{}, notFound(key, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, blob.Info{}, fmt.Errorf("localfs: get %q: %w", key, err)
	}
	return f, blob.Info{Size: st.Size(), ContentType: ct}, nil
}

// Head returns the object's size and content type.
func (s *Store) Head(ctx context.Context, key string) (blob.Info, error) {
	if err := checkKey(key); err != nil {
		return blob.Info{}, err
	}
	dir, base := s.paths(key)
	l := s.lock(key)
	l.RLock()
	st, err := os.Stat(filepath.Join(dir, base+dataSuffix))
	var ct string
	if err == nil {
		ct, err = readMeta(filepath.Join(dir, base+metaSuffix))
	}
	l.RUnlock()
	if err != nil {
		return blob.Info{}, notFound(key, err)
	}
	return blob.Info{Size: st.Size(), ContentType: ct}, nil
}

// readMeta returns the content type in a meta file; a missing meta file
// (only possible if someone removed it by hand) means no content type.
func readMeta(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		return "", fmt.Errorf("corrupt meta file %s: %w", path, err)
	}
	return m.ContentType, nil
}

func notFound(key string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %q", blob.ErrNotFound, key)
	}
	return fmt.Errorf("localfs: %q: %w", key, err)
}

// Delete removes the object; a missing object is not an error. Empty
// directories are left in place.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	dir, base := s.paths(key)
	l := s.lock(key)
	l.Lock()
	defer l.Unlock()
	// Data first: once it is gone the object is invisible.
	for _, p := range []string{base + dataSuffix, base + metaSuffix} {
		if err := os.Remove(filepath.Join(dir, p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("localfs: delete %q: %w", key, err)
		}
	}
	return nil
}

// PresignGet returns blob.ErrNoPresign (after checking the key): the server
// streams local objects itself.
func (s *Store) PresignGet(ctx context.Context, key string, ttl time.Duration) (string, error) {
	if err := checkKey(key); err != nil {
		return "", err
	}
	return "", blob.ErrNoPresign
}

// PresignPut returns blob.ErrNoPresign (after checking the key).
func (s *Store) PresignPut(ctx context.Context, key string, size int64, contentType string, ttl time.Duration) (string, error) {
	if err := checkKey(key); err != nil {
		return "", err
	}
	return "", blob.ErrNoPresign
}

// checkKey is blob.CheckKey (the port's shared key syntax).
func checkKey(key string) error { return blob.CheckKey(key) }
