package media

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"io"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/media/mediatest"
	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/infra/bolt"
	"github.com/cirrus-matrix/cirrus/infra/localfs"
)

// fakeFetcher serves one remote file and counts the fetches.
type fakeFetcher struct {
	calls   atomic.Int32
	delay   time.Duration
	data    []byte
	ct      string
	err     error
	lastReq RemoteRequest
	mu      sync.Mutex
}

func (f *fakeFetcher) FetchMedia(ctx context.Context, req RemoteRequest) (*RemoteFile, error) {
	f.calls.Add(1)
	f.mu.Lock()
	f.lastReq = req
	f.mu.Unlock()
	time.Sleep(f.delay)
	if f.err != nil {
		return nil, f.err
	}
	return &RemoteFile{Body: io.NopCloser(bytes.NewReader(f.data)), Size: -1, ContentType: f.ct, Filename: "remote.bin"}, nil
}

func TestRemoteFetchedOnceAndCached(t *testing.T) {
	f := newFixture(t, Config{})
	ff := &fakeFetcher{delay: 200 * time.Millisecond, data: []byte("remote bytes"), ct: "text/plain"}
	f.s.SetFetcher(ff)
	ctx := context.Background()

	// Concurrent first requests: one fetch, every caller gets the record.
	var wg sync.WaitGroup
	recs := make([]*Record, 8)
	errs := make([]error, 8)
	for i := range recs {
		wg.Go(func() { recs[i], errs[i] = f.s.Lookup(ctx, "other.example", "abcDEF123", time.Second, true) })
	}
	wg.Wait()
	for i := range recs {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		if recs[i].Size != int64(len(ff.data)) || recs[i].ContentType != "text/plain" || recs[i].Filename != "remote.bin" {
			t.Fatalf("request %d: record %+v", i, recs[i])
		}
	}
	if n := ff.calls.Load(); n != 1 {
		t.Fatalf("%d fetches for concurrent first requests, want 1", n)
	}
	rc, err := f.s.Open(ctx, f.s.Download(recs[0]))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, ff.data) {
		t.Fatalf("cached bytes %q", got)
	}
	// Later requests, even with allow_remote=false, come from the cache.
	if _, err := f.s.Lookup(ctx, "other.example", "abcDEF123", time.Second, false); err != nil {
		t.Fatal(err)
	}
	if n := ff.calls.Load(); n != 1 {
		t.Fatalf("%d fetches after a cached request", n)
	}
}

func TestRemoteErrors(t *testing.T) {
	ctx := context.Background()
	notFound := httpapi.NotFound("other.example: media not found")
	for _, tc := range []struct {
		name        string
		fetcher     *fakeFetcher
		allowRemote bool
		limit       int64
		status      int
		code        string
	}{
		{name: "not allowed", fetcher: &fakeFetcher{data: []byte("x")}, status: 404, code: "M_NOT_FOUND"},
		{name: "remote 404", fetcher: &fakeFetcher{err: notFound}, allowRemote: true, status: 404, code: "M_NOT_FOUND"},
		{name: "too large", fetcher: &fakeFetcher{data: make([]byte, 100)}, allowRemote: true, limit: 10, status: 502, code: "M_TOO_LARGE"},
		{name: "unreachable", fetcher: &fakeFetcher{err: &httpapi.Error{Status: 502, Code: "M_UNKNOWN", Message: "down"}}, allowRemote: true, status: 502, code: "M_UNKNOWN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Config{MaxUploadBytes: tc.limit})
			f.s.SetFetcher(tc.fetcher)
			_, err := f.s.Lookup(ctx, "other.example", "abc", time.Second, tc.allowRemote)
			e, ok := httpapi.AsError(err)
			if !ok || e.Status != tc.status || e.Code != tc.code {
				t.Fatalf("got %v, want %d %s", err, tc.status, tc.code)
			}
		})
	}
}

// A failure is remembered for a few seconds, then the remote is tried again.
func TestRemoteFailureRemembered(t *testing.T) {
	f := newFixture(t, Config{})
	ff := &fakeFetcher{err: &httpapi.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN", Message: "down"}}
	f.s.SetFetcher(ff)
	ctx := context.Background()
	for range 3 {
		if _, err := f.s.Lookup(ctx, "other.example", "abc", time.Second, true); err == nil {
			t.Fatal("no error")
		}
	}
	if n := ff.calls.Load(); n != 1 {
		t.Fatalf("%d fetches within the failure memory, want 1", n)
	}
	f.clock.add(failureMemory + time.Second)
	ff.err, ff.data = nil, []byte("back")
	r, err := f.s.Lookup(ctx, "other.example", "abc", time.Second, true)
	if err != nil || r.Size != 4 {
		t.Fatalf("after the failure expired: %v %+v", err, r)
	}
	if n := ff.calls.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
}

func TestRemoteThumbnailCachedPerBox(t *testing.T) {
	f := newFixture(t, Config{})
	png := mediatest.PNG(40, 30)
	ff := &fakeFetcher{data: png, ct: "image/png"}
	f.s.SetFetcher(ff)
	ctx := context.Background()
	c, err := f.s.RemoteThumbnail(ctx, "other.example", "abc", 30, 30, MethodCrop, false, time.Second, true, false)
	if err != nil {
		t.Fatal(err)
	}
	if c.ContentType != "image/png" || c.Size != int64(len(png)) {
		t.Fatalf("thumbnail %+v", c)
	}
	if b := ff.lastReq.Thumb; b == nil || *b != (Box{32, 32, MethodCrop}) {
		t.Fatalf("asked the remote for box %+v, want 32x32 crop", b)
	}
	// Same box: cached. Another box: fetched.
	if _, err := f.s.RemoteThumbnail(ctx, "other.example", "abc", 20, 20, MethodCrop, false, time.Second, false, false); err != nil {
		t.Fatal(err)
	}
	if n := ff.calls.Load(); n != 1 {
		t.Fatalf("%d fetches for one box", n)
	}
	if _, err := f.s.RemoteThumbnail(ctx, "other.example", "abc", 600, 400, MethodScale, false, time.Second, true, false); err != nil {
		t.Fatal(err)
	}
	if n := ff.calls.Load(); n != 2 {
		t.Fatalf("%d fetches for two boxes", n)
	}
	// The freeze: cached after it, not served on the legacy endpoints.
	_, err = f.s.RemoteThumbnail(ctx, "other.example", "abc", 20, 20, MethodCrop, false, time.Second, true, true)
	if e, ok := httpapi.AsError(err); !ok || e.Status != 404 {
		t.Fatalf("legacy thumbnail after the freeze: %v", err)
	}
}

// Several processes (services sharing one table and blob store, as Lambda
// instances do) asked for the same remote media at once fetch it once: the
// lease is a conditional write (e2e's TestMediaFederationLegacyRemote
// checks the same on DynamoDB).
func TestRemoteLeaseAcrossProcesses(t *testing.T) {
	for _, engine := range []string{"bolt"} {
		t.Run(engine, func(t *testing.T) {
			db, err := bolt.Open(filepath.Join(t.TempDir(), "cirrus.db"), bolt.WithNoSync())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			var tb table.Table = db.Table()
			blobs, err := localfs.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			ff := &fakeFetcher{delay: 300 * time.Millisecond, data: []byte("shared remote bytes"), ct: "text/plain"}
			ctx := context.Background()
			var wg sync.WaitGroup
			errs := make([]error, 12)
			for i := range errs {
				s := New(Config{ServerName: "cirrus.test"}, tb, blobs, nil, nil)
				s.SetFetcher(ff)
				wg.Go(func() {
					if i%2 == 0 {
						_, errs[i] = s.Lookup(ctx, "other.example", "shared", time.Second, true)
					} else {
						_, errs[i] = s.RemoteThumbnail(ctx, "other.example", "shared", 32, 32, MethodCrop, false, time.Second, true, false)
					}
				})
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("process %d: %v", i, err)
				}
			}
			// One fetch of the media, one of the thumbnail box.
			if n := ff.calls.Load(); n != 2 {
				t.Fatalf("%d fetches by 12 processes, want 2", n)
			}
		})
	}
}

// With the original cached, a remote thumbnail is made here like a local
// one; the remote's thumbnail endpoint is asked only when the cached
// original cannot be thumbnailed (or is not cached).
func TestRemoteThumbnailFromCachedOriginal(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		cfg       Config
		data      []byte
		ct        string
		legacy    bool
		wantFetch int32 // thumbnail fetches after the original was cached
		wantSize  image.Point
		wantCode  string
	}{
		{name: "png made locally", data: mediatest.PNG(400, 300), ct: "image/png", wantSize: image.Pt(32, 32)},
		{name: "jpeg made locally", data: mediatest.JPEG(640, 480), ct: "image/jpeg", wantSize: image.Pt(32, 32)},
		{name: "gif made locally", data: mediatest.GIF(100, 100, 3), ct: "image/gif", wantSize: image.Pt(32, 32)},
		{name: "webp made locally", data: mediatest.WebP(200, 100, color.NRGBA{R: 200, A: 255}), ct: "image/webp", wantSize: image.Pt(32, 32)},
		{name: "not an image: remote thumbnail", data: []byte("plain text"), ct: "text/plain", wantFetch: 1},
		{name: "over the pixel limit: remote thumbnail", cfg: Config{MaxThumbnailPixels: 1000}, data: mediatest.PNG(400, 300), ct: "image/png", wantFetch: 1},
		{name: "legacy endpoint after the freeze", data: mediatest.PNG(400, 300), ct: "image/png", legacy: true, wantCode: "M_NOT_FOUND"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.cfg)
			ff := &fakeFetcher{data: tc.data, ct: tc.ct}
			f.s.SetFetcher(ff)
			if _, err := f.s.Lookup(ctx, "other.example", "abc", time.Second, true); err != nil {
				t.Fatal(err)
			}
			before := ff.calls.Load()
			c, err := f.s.RemoteThumbnail(ctx, "other.example", "abc", 30, 30, MethodCrop, false, time.Second, true, tc.legacy)
			if got := ff.calls.Load() - before; got != tc.wantFetch {
				t.Fatalf("%d remote thumbnail requests, want %d", got, tc.wantFetch)
			}
			if tc.wantCode != "" {
				if e, ok := httpapi.AsError(err); !ok || e.Code != tc.wantCode {
					t.Fatalf("got %v, want %s", err, tc.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantFetch > 0 {
				if ff.lastReq.Thumb == nil {
					t.Fatalf("the fallback asked for the media, not a thumbnail: %+v", ff.lastReq)
				}
				return
			}
			rc, err := f.s.Open(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			img, _, err := image.Decode(rc)
			if err != nil {
				t.Fatalf("thumbnail (%s) does not decode: %v", c.ContentType, err)
			}
			if img.Bounds().Size() != tc.wantSize {
				t.Fatalf("thumbnail is %v, want %v", img.Bounds().Size(), tc.wantSize)
			}
			// Asked again: the cached thumbnail, still no remote request.
			if _, err := f.s.RemoteThumbnail(ctx, "other.example", "abc", 30, 30, MethodCrop, false, time.Second, false, false); err != nil {
				t.Fatal(err)
			}
			if n := ff.calls.Load() - before; n != 0 {
				t.Fatalf("%d remote requests for a repeated thumbnail", n)
			}
		})
	}
}
