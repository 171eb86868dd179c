// Package blobtest is the contract every blob.Store must pass. Adapters call
// Run from their own tests with a factory that returns an empty store.
package blobtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/cirrus-matrix/cirrus/core/blob"
)

// Run exercises store against the blob.Store contract. newStore is called once
// per subtest and must return a store with no objects in it.
func Run(t *testing.T, newStore func(t *testing.T) blob.Store) {
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, newStore(t)) })
	t.Run("ContentType", func(t *testing.T) { testContentType(t, newStore(t)) })
	t.Run("Missing", func(t *testing.T) { testMissing(t, newStore(t)) })
	t.Run("Overwrite", func(t *testing.T) { testOverwrite(t, newStore(t)) })
	t.Run("Delete", func(t *testing.T) { testDelete(t, newStore(t)) })
	t.Run("NestedKeys", func(t *testing.T) { testNestedKeys(t, newStore(t)) })
	t.Run("InvalidKeys", func(t *testing.T) { testInvalidKeys(t, newStore(t)) })
	t.Run("SizeMismatch", func(t *testing.T) { testSizeMismatch(t, newStore(t)) })
	t.Run("FailingReader", func(t *testing.T) { testFailingReader(t, newStore(t)) })
	t.Run("ConcurrentKeys", func(t *testing.T) { testConcurrentKeys(t, newStore(t)) })
	t.Run("ConcurrentSameKey", func(t *testing.T) { testConcurrentSameKey(t, newStore(t)) })
	t.Run("Presign", func(t *testing.T) { testPresign(t, newStore(t)) })
}

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func mustPut(t *testing.T, s blob.Store, key string, data []byte, contentType string) {
	t.Helper()
	if err := s.Put(t.Context(), key, bytes.NewReader(data), int64(len(data)), contentType); err != nil {
		t.Fatalf("Put(%q, %d bytes): %v", key, len(data), err)
	}
}

// wantObject checks that Get and Head both report exactly data and contentType.
func wantObject(t *testing.T, s blob.Store, key string, data []byte, contentType string) {
	t.Helper()
	rc, info, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	got, err := io.ReadAll(rc)
	if cerr := rc.Close(); cerr != nil {
		t.Errorf("Get(%q): Close: %v", key, cerr)
	}
	if err != nil {
		t.Fatalf("Get(%q): read: %v", key, err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("Get(%q): got %d bytes, want %d (content differs)", key, len(got), len(data))
	}
	if info.Size != int64(len(data)) {
		t.Errorf("Get(%q): Info.Size = %d, want %d", key, info.Size, len(data))
	}
	if info.ContentType != contentType {
		t.Errorf("Get(%q): Info.ContentType = %q, want %q", key, info.ContentType, contentType)
	}
	h, err := s.Head(t.Context(), key)
	if err != nil {
		t.Fatalf("Head(%q): %v", key, err)
	}
	if h != (blob.Info{Size: int64(len(data)), ContentType: contentType}) {
		t.Errorf("Head(%q) = %+v, want size %d type %q", key, h, len(data), contentType)
	}
}

// wantAbsent checks that key is not visible through Get or Head.
func wantAbsent(t *testing.T, s blob.Store, key string) {
	t.Helper()
	rc, _, err := s.Get(t.Context(), key)
	if err == nil {
		rc.Close()
		t.Fatalf("Get(%q) succeeded, want blob.ErrNotFound", key)
	}
	if !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Get(%q) error = %v, want blob.ErrNotFound", key, err)
	}
	if _, err := s.Head(t.Context(), key); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Head(%q) error = %v, want blob.ErrNotFound", key, err)
	}
}

func testRoundTrip(t *testing.T, s blob.Store) {
	big := randomBytes(3<<20+17, 1)
	small := []byte("hello, cirrus")
	cases := []struct {
		name string
		key  string
		data []byte
		wrap func(io.Reader) io.Reader
	}{
		{"empty", "rt/empty", nil, nil},
		{"one byte", "rt/one", []byte{0}, nil},
		{"small", "rt/small", small, nil},
		{"small one byte at a time", "rt/small-1b", small, iotest.OneByteReader},
		{"small data with EOF", "rt/small-eof", small, iotest.DataErrReader},
		{"large", "rt/large", big, nil},
		{"large half reads", "rt/large-half", big, iotest.HalfReader},
		{"large data with EOF", "rt/large-eof", big, iotest.DataErrReader},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var r io.Reader = bytes.NewReader(tc.data)
			if tc.wrap != nil {
				r = tc.wrap(r)
			}
			if err := s.Put(t.Context(), tc.key, r, int64(len(tc.data)), "application/octet-stream"); err != nil {
				t.Fatalf("Put: %v", err)
			}
			wantObject(t, s, tc.key, tc.data, "application/octet-stream")
		})
	}
}

func testContentType(t *testing.T, s blob.Store) {
	for i, ct := range []string{
		"image/png",
		"text/plain; charset=utf-8",
		"application/json",
		"video/mp4",
		`multipart/mixed; boundary="x-y"`,
	} {
		key := fmt.Sprintf("ct/%d", i)
		data := []byte("type " + ct)
		mustPut(t, s, key, data, ct)
		wantObject(t, s, key, data, ct)
	}
}

func testMissing(t *testing.T, s blob.Store) {
	wantAbsent(t, s, "never/put")
	wantAbsent(t, s, "x")
	mustPut(t, s, "dir/obj", []byte("x"), "text/plain")
	// A key prefix is not an object.
	wantAbsent(t, s, "dir")
	wantAbsent(t, s, "dir/ob")
}

func testOverwrite(t *testing.T, s blob.Store) {
	v1 := randomBytes(100_000, 2)
	v2 := []byte("second version")
	mustPut(t, s, "ow/key", v1, "image/png")
	wantObject(t, s, "ow/key", v1, "image/png")
	mustPut(t, s, "ow/key", v2, "text/plain")
	wantObject(t, s, "ow/key", v2, "text/plain")
	mustPut(t, s, "ow/key", nil, "application/x-empty")
	wantObject(t, s, "ow/key", nil, "application/x-empty")
}

func testDelete(t *testing.T, s blob.Store) {
	ctx := t.Context()
	mustPut(t, s, "del/a", []byte("a"), "text/plain")
	mustPut(t, s, "del/b", []byte("b"), "text/plain")
	if err := s.Delete(ctx, "del/a"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantAbsent(t, s, "del/a")
	wantObject(t, s, "del/b", []byte("b"), "text/plain")
	if err := s.Delete(ctx, "del/a"); err != nil {
		t.Errorf("Delete of an already deleted key: %v", err)
	}
	if err := s.Delete(ctx, "del/never"); err != nil {
		t.Errorf("Delete of a never stored key: %v", err)
	}
	// The key is usable again after a delete.
	mustPut(t, s, "del/a", []byte("again"), "text/html")
	wantObject(t, s, "del/a", []byte("again"), "text/html")
}

func testNestedKeys(t *testing.T, s blob.Store) {
	// S3 has no directories: a key and keys below it coexist.
	keys := []string{
		"n",
		"n/m",
		"n/m/o",
		"a..b",
		".hidden/.x",
		"A-Z_a-z.0-9/key-1.bin",
		"-/_/.../x",
	}
	for i, k := range keys {
		mustPut(t, s, k, []byte(fmt.Sprintf("object %d", i)), "text/plain")
	}
	for i, k := range keys {
		wantObject(t, s, k, []byte(fmt.Sprintf("object %d", i)), "text/plain")
	}
	if err := s.Delete(t.Context(), "n/m"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantAbsent(t, s, "n/m")
	wantObject(t, s, "n", []byte("object 0"), "text/plain")
	wantObject(t, s, "n/m/o", []byte("object 2"), "text/plain")
}

func testInvalidKeys(t *testing.T, s blob.Store) {
	ctx := t.Context()
	cases := []struct {
		key string
		// alias is a valid key a careless store might normalise key to.
		alias string
	}{
		{"", ""},
		{".", ""},
		{"..", ""},
		{"../x", "x"},
		{"a/../x", "x"},
		{"a/..", "a"},
		{"./x", "x"},
		{"a/./x", "a/x"},
		{"/abs", "abs"},
		{"/", ""},
		{"a//x", "a/x"},
		{"a/", "a"},
		{"sp ace", ""},
		{`back\slash`, ""},
		{"q?x", "q"},
		{"h#x", "h"},
		{"pct%2Fx", ""},
		{"col:on", ""},
		{"tilde~x", ""},
		{"plus+x", ""},
		{"nul\x00x", ""},
		{"new\nline", ""},
		{"\u00fcml", ""},
		{"x\xff", "x"},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%q", tc.key), func(t *testing.T) {
			if err := s.Put(ctx, tc.key, strings.NewReader("data"), 4, "text/plain"); err == nil {
				t.Errorf("Put(%q) succeeded, want an error", tc.key)
			}
			if rc, _, err := s.Get(ctx, tc.key); err == nil {
				rc.Close()
				t.Errorf("Get(%q) succeeded, want an error", tc.key)
			}
			if _, err := s.Head(ctx, tc.key); err == nil {
				t.Errorf("Head(%q) succeeded, want an error", tc.key)
			}
			if err := s.Delete(ctx, tc.key); err == nil {
				t.Errorf("Delete(%q) succeeded, want an error", tc.key)
			}
			if _, err := s.PresignGet(ctx, tc.key, time.Minute); err == nil {
				t.Errorf("PresignGet(%q) succeeded, want an error", tc.key)
			}
			if _, err := s.PresignPut(ctx, tc.key, 4, "text/plain", time.Minute); err == nil {
				t.Errorf("PresignPut(%q) succeeded, want an error", tc.key)
			}
			if tc.alias != "" {
				wantAbsent(t, s, tc.alias)
			}
		})
	}
}

// trickle returns data in small reads so that a store cannot tell the size
// from a single read.
func trickle(data []byte) io.Reader { return iotest.HalfReader(bytes.NewReader(data)) }

func testSizeMismatch(t *testing.T, s blob.Store) {
	prev := []byte("previous version")
	big := randomBytes(1<<20, 3)
	str := func(s string) func() io.Reader { return func() io.Reader { return strings.NewReader(s) } }
	cases := []struct {
		name string
		body func() io.Reader
		size int64
	}{
		{"fewer", str("12345"), 10},
		{"none of one", str(""), 1},
		{"fewer large", func() io.Reader { return trickle(big[:len(big)-1]) }, int64(len(big))},
		{"fewer with EOF", func() io.Reader { return iotest.DataErrReader(strings.NewReader("12345")) }, 6},
		{"more", str("1234567890"), 5},
		{"one more", str("123456"), 5},
		{"one more bytewise", func() io.Reader { return iotest.OneByteReader(strings.NewReader("123456")) }, 5},
		{"any for zero", str("x"), 0},
		{"more large", func() io.Reader { return trickle(append(big[:len(big):len(big)], 'x')) }, int64(len(big))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, existing := range []bool{false, true} {
				key := "short/new"
				if existing {
					key = "short/existing"
					mustPut(t, s, key, prev, "text/plain")
				}
				err := s.Put(t.Context(), key, tc.body(), tc.size, "application/octet-stream")
				if !errors.Is(err, blob.ErrShortBody) {
					t.Fatalf("Put(existing=%v) error = %v, want blob.ErrShortBody", existing, err)
				}
				if existing {
					wantObject(t, s, key, prev, "text/plain")
				} else {
					wantAbsent(t, s, key)
				}
			}
		})
	}
	t.Run("negative size", func(t *testing.T) {
		if err := s.Put(t.Context(), "short/neg", strings.NewReader(""), -1, "text/plain"); err == nil {
			t.Fatal("Put with size -1 succeeded")
		}
		wantAbsent(t, s, "short/neg")
	})
}

// failingReader yields n bytes of data, then fails with err.
type failingReader struct {
	data []byte
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

// cancellingReader cancels a context once it has yielded after bytes, then
// keeps serving data as if nothing happened.
type cancellingReader struct {
	r      io.Reader
	after  int
	n      int
	cancel context.CancelFunc
}

func (c *cancellingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	if c.n >= c.after {
		c.cancel()
	}
	return n, err
}

func testFailingReader(t *testing.T, s blob.Store) {
	errBoom := errors.New("blobtest: reader failed")
	data := randomBytes(2<<20, 4)
	prev := []byte("kept")
	cases := []struct {
		name    string
		body    func(cancel context.CancelFunc) io.Reader
		wantErr error
	}{
		{"immediately", func(context.CancelFunc) io.Reader { return &failingReader{err: errBoom} }, errBoom},
		{"mid-way", func(context.CancelFunc) io.Reader {
			return &failingReader{data: data[:1<<20], err: errBoom}
		}, errBoom},
		{"at the last byte", func(context.CancelFunc) io.Reader {
			return &failingReader{data: data[:len(data)-1], err: errBoom}
		}, errBoom},
		{"context cancelled mid-way", func(cancel context.CancelFunc) io.Reader {
			return &cancellingReader{r: trickle(data), after: 256 << 10, cancel: cancel}
		}, context.Canceled},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, existing := range []bool{false, true} {
				key := "fail/new"
				if existing {
					key = "fail/existing"
					mustPut(t, s, key, prev, "text/plain")
				}
				ctx, cancel := context.WithCancel(t.Context())
				err := s.Put(ctx, key, tc.body(cancel), int64(len(data)), "application/octet-stream")
				cancel()
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Put(existing=%v) error = %v, want %v", existing, err, tc.wantErr)
				}
				if existing {
					wantObject(t, s, key, prev, "text/plain")
				} else {
					wantAbsent(t, s, key)
				}
			}
		})
	}
	t.Run("context already cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := s.Put(ctx, "fail/ctx", bytes.NewReader(data), int64(len(data)), "text/plain"); err == nil {
			t.Fatal("Put with a cancelled context succeeded")
		}
		wantAbsent(t, s, "fail/ctx")
	})
}

func testConcurrentKeys(t *testing.T, s blob.Store) {
	const n = 24
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			data := randomBytes(64<<10+i, uint64(100+i))
			errs[i] = s.Put(t.Context(), fmt.Sprintf("conc/%d", i), bytes.NewReader(data), int64(len(data)), fmt.Sprintf("application/x-%d", i))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Put %d: %v", i, err)
		}
	}
	for i := range n {
		wantObject(t, s, fmt.Sprintf("conc/%d", i), randomBytes(64<<10+i, uint64(100+i)), fmt.Sprintf("application/x-%d", i))
	}
}

// testConcurrentSameKey races writers of one key against readers: every read
// must see one whole version, its bytes and content type belonging together.
func testConcurrentSameKey(t *testing.T, s blob.Store) {
	const writers, rounds = 6, 5
	version := func(i int) ([]byte, string) {
		return bytes.Repeat([]byte{byte('a' + i)}, 20_000+1000*i), fmt.Sprintf("application/x-v%d", i)
	}
	data, ct := version(0)
	mustPut(t, s, "same", data, ct)

	ctx := t.Context()
	done := make(chan struct{})
	var readErr error
	var readers sync.WaitGroup
	readers.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			rc, info, err := s.Get(ctx, "same")
			if err != nil {
				readErr = fmt.Errorf("Get during writes: %w", err)
				return
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				readErr = fmt.Errorf("read during writes: %w", err)
				return
			}
			if len(got) == 0 {
				readErr = errors.New("read an empty object during writes")
				return
			}
			i := int(got[0] - 'a')
			want, wantCT := version(i)
			if !bytes.Equal(got, want) || info.ContentType != wantCT || info.Size != int64(len(want)) {
				readErr = fmt.Errorf("read a torn object: %d bytes starting %q, info %+v", len(got), got[0], info)
				return
			}
		}
	})
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Go(func() {
			data, ct := version(i)
			for range rounds {
				if err := s.Put(ctx, "same", bytes.NewReader(data), int64(len(data)), ct); err != nil {
					errs[i] = err
					return
				}
			}
		})
	}
	wg.Wait()
	close(done)
	readers.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	if readErr != nil {
		t.Fatal(readErr)
	}
	// The survivor is one whole version.
	h, err := s.Head(ctx, "same")
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	var i int
	if _, err := fmt.Sscanf(h.ContentType, "application/x-v%d", &i); err != nil || i < 0 || i >= writers {
		t.Fatalf("final content type %q is none of the versions", h.ContentType)
	}
	data, ct = version(i)
	wantObject(t, s, "same", data, ct)
}

func testPresign(t *testing.T, s blob.Store) {
	ctx := t.Context()
	client := &http.Client{Timeout: 30 * time.Second}
	data := randomBytes(1<<20+3, 5)
	const ct = "image/webp"

	t.Run("put", func(t *testing.T) {
		url, err := s.PresignPut(ctx, "pre/put", int64(len(data)), ct, 5*time.Minute)
		if errors.Is(err, blob.ErrNoPresign) {
			t.Skip("store has no presigned URLs")
		}
		if err != nil {
			t.Fatalf("PresignPut: %v", err)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(data))
		if err != nil {
			t.Fatalf("request for %q: %v", url, err)
		}
		req.Header.Set("Content-Type", ct)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("PUT: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("PUT to presigned URL: %s: %s", resp.Status, body)
		}
		wantObject(t, s, "pre/put", data, ct)
	})

	t.Run("put of any size", func(t *testing.T) {
		url, err := s.PresignPut(ctx, "pre/any", -1, "", 5*time.Minute)
		if errors.Is(err, blob.ErrNoPresign) {
			t.Skip("store has no presigned URLs")
		}
		if err != nil {
			t.Fatalf("PresignPut: %v", err)
		}
		small := data[:1000]
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(small))
		if err != nil {
			t.Fatalf("request for %q: %v", url, err)
		}
		req.Header.Set("Content-Type", "text/plain")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("PUT: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("PUT to presigned URL: %s: %s", resp.Status, body)
		}
		wantObject(t, s, "pre/any", small, "text/plain")
	})

	t.Run("get", func(t *testing.T) {
		for _, obj := range []struct {
			key  string
			data []byte
		}{{"pre/get", data}, {"pre/empty", nil}} {
			mustPut(t, s, obj.key, obj.data, ct)
			url, err := s.PresignGet(ctx, obj.key, 5*time.Minute)
			if errors.Is(err, blob.ErrNoPresign) {
				t.Skip("store has no presigned URLs")
			}
			if err != nil {
				t.Fatalf("PresignGet: %v", err)
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				t.Fatalf("request for %q: %v", url, err)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("GET body: %v", err)
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET presigned URL: %s: %s", resp.Status, got)
			}
			if !bytes.Equal(got, obj.data) {
				t.Fatalf("GET %s: got %d bytes, want %d (content differs)", obj.key, len(got), len(obj.data))
			}
			if h := resp.Header.Get("Content-Type"); h != ct {
				t.Errorf("GET %s: Content-Type %q, want %q", obj.key, h, ct)
			}
		}
	})
}
