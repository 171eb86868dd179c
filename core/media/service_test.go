package media

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/media/mediatest"
	"github.com/cirrus-matrix/cirrus/core/netguard"
	"github.com/cirrus-matrix/cirrus/infra/bolt"
	"github.com/cirrus-matrix/cirrus/infra/localfs"
)

// clock is a settable time source shared by the service and the table (so
// TTLs expire when the test says).
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	s     *Service
	clock *clock
	blobs *localfs.Store
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	clk := &clock{t: time.Now()}
	dir := t.TempDir()
	db, err := bolt.Open(filepath.Join(dir, "cirrus.db"), bolt.WithClock(clk.now), bolt.WithNoSync())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	blobs, err := localfs.New(filepath.Join(dir, "media"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ServerName == "" {
		cfg.ServerName = "cirrus.test"
	}
	return &fixture{s: New(cfg, db.Table(), blobs, nil, clk.now), clock: clk, blobs: blobs}
}

func upload(body []byte, ct string) Upload {
	return Upload{Body: bytes.NewReader(body), Declared: int64(len(body)), ContentType: ct}
}

func TestStoreAndDedup(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := context.Background()
	data := []byte("hello media")
	a, err := f.s.Store(ctx, "@a:cirrus.test", upload(data, "text/plain"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := f.s.Store(ctx, "@b:cirrus.test", upload(data, "application/x-other"))
	if err != nil {
		t.Fatal(err)
	}
	if a.MediaID == b.MediaID || a.Blob != b.Blob || a.Size != int64(len(data)) {
		t.Fatalf("two uploads of the same bytes: %+v %+v", a, b)
	}
	got, err := f.s.Lookup(ctx, "cirrus.test", b.MediaID, 0, true)
	if err != nil || got.ContentType != "application/x-other" || got.Uploader != "@b:cirrus.test" {
		t.Fatalf("lookup: %+v %v", got, err)
	}
	n := 0
	filepath.Walk(f.blobs.Dir(), func(p string, info os.FileInfo, err error) error {
		if strings.HasSuffix(p, "~blob") {
			n++
		}
		return nil
	})
	if n != 1 {
		t.Fatalf("%d blobs stored for one content, want 1", n)
	}
}

func TestUploadBodyChecks(t *testing.T) {
	f := newFixture(t, Config{MaxUploadBytes: 100})
	ctx := context.Background()
	cases := []struct {
		name   string
		up     Upload
		status int
	}{
		{"declared too large", Upload{Body: bytes.NewReader(make([]byte, 10)), Declared: 101}, 413},
		{"chunked too large", Upload{Body: bytes.NewReader(make([]byte, 101)), Declared: -1}, 413},
		{"shorter than declared", Upload{Body: bytes.NewReader(make([]byte, 10)), Declared: 20}, 400},
		{"longer than declared", Upload{Body: bytes.NewReader(make([]byte, 30)), Declared: 20}, 400},
		{"broken body", Upload{Body: io.MultiReader(bytes.NewReader(make([]byte, 5)), iotest.ErrReader(io.ErrUnexpectedEOF)), Declared: 20}, 400},
		{"bad filename", Upload{Body: bytes.NewReader(nil), Declared: 0, Filename: "a\nb"}, 400},
	}
	for _, c := range cases {
		_, err := f.s.Store(ctx, "@a:cirrus.test", c.up)
		wantStatus(t, c.name, err, c.status)
	}
	// Nothing of the failed uploads was stored.
	var files []string
	filepath.Walk(f.blobs.Dir(), func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if len(files) != 0 {
		t.Fatalf("failed uploads left files: %v", files)
	}
	// Chunked bodies within the limit, and empty files, are fine.
	if _, err := f.s.Store(ctx, "@a:cirrus.test", Upload{Body: bytes.NewReader(make([]byte, 100)), Declared: -1}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.Store(ctx, "@a:cirrus.test", Upload{Body: http.NoBody, Declared: 0}); err != nil {
		t.Fatal(err)
	}
}

func TestAsyncUpload(t *testing.T) {
	f := newFixture(t, Config{MaxPendingUploads: 2, UnusedExpiry: time.Hour})
	ctx := context.Background()
	alice, bob := id.UserID("@alice:cirrus.test"), id.UserID("@bob:cirrus.test")
	r, err := f.s.Create(ctx, "@alice:cirrus.test")
	if err != nil {
		t.Fatal(err)
	}
	if r.ExpiresMS != f.clock.now().Add(time.Hour).UnixMilli() {
		t.Fatalf("unused_expires_at %d", r.ExpiresMS)
	}
	// Not uploaded yet: a download waits, then gives up.
	start := time.Now()
	_, err = f.s.Lookup(ctx, "cirrus.test", r.MediaID, 300*time.Millisecond, true)
	wantStatus(t, "download before upload", err, 504)
	if time.Since(start) < 250*time.Millisecond {
		t.Fatal("did not wait for the upload")
	}
	// A waiting download sees the upload when it lands.
	done := make(chan error, 1)
	go func() {
		_, err := f.s.Lookup(ctx, "cirrus.test", r.MediaID, 10*time.Second, true)
		done <- err
	}()
	time.Sleep(150 * time.Millisecond)
	wantStatus(t, "someone else's id", f.s.StoreAt(ctx, "@bob:cirrus.test", "cirrus.test", r.MediaID, upload([]byte("x"), "")), 403)
	if err := f.s.StoreAt(ctx, "@alice:cirrus.test", "cirrus.test", r.MediaID, upload([]byte("late bytes"), "text/plain")); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("waiting download: %v", err)
	}
	wantStatus(t, "second upload", f.s.StoreAt(ctx, "@alice:cirrus.test", "cirrus.test", r.MediaID, upload([]byte("again"), "")), 409)
	wantStatus(t, "never created", f.s.StoreAt(ctx, "@alice:cirrus.test", "cirrus.test", "nope", upload(nil, "")), 404)
	wantStatus(t, "other server", f.s.StoreAt(ctx, "@alice:cirrus.test", "elsewhere.test", r.MediaID, upload(nil, "")), 404)
	wantStatus(t, "bad id", f.s.StoreAt(ctx, "@alice:cirrus.test", "cirrus.test", "../x", upload(nil, "")), 400)

	// Two open reservations at most; an expired one frees its place and
	// can no longer be uploaded to.
	p1, err := f.s.Create(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.Create(ctx, alice); err != nil {
		t.Fatal(err)
	}
	_, err = f.s.Create(ctx, alice)
	wantStatus(t, "third pending", err, 429)
	if _, err := f.s.Create(ctx, bob); err != nil {
		t.Fatalf("bob has his own quota: %v", err)
	}
	f.clock.add(time.Hour + time.Second)
	if _, err := f.s.Create(ctx, alice); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	wantStatus(t, "expired id", f.s.StoreAt(ctx, alice, "cirrus.test", p1.MediaID, upload([]byte("x"), "")), 404)
	_, err = f.s.Lookup(ctx, "cirrus.test", p1.MediaID, 0, true)
	wantStatus(t, "expired id download", err, 404)
}

func TestLookupErrors(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := context.Background()
	_, err := f.s.Lookup(ctx, "cirrus.test", "missing", 0, true)
	wantStatus(t, "missing", err, 404)
	_, err = f.s.Lookup(ctx, "other.test", "abc", 0, true)
	wantStatus(t, "remote", err, 502)
	_, err = f.s.Lookup(ctx, "other.test", "abc", 0, false)
	wantStatus(t, "remote, allow_remote=false", err, 404)
	_, err = f.s.Lookup(ctx, "cirrus.test", "a.b", 0, true)
	wantStatus(t, "bad media id", err, 400)
	_, err = f.s.Lookup(ctx, "bad server!", "abc", 0, true)
	wantStatus(t, "bad server", err, 400)
}

func TestLegacyFreeze(t *testing.T) {
	f := newFixture(t, Config{LegacyUnauthenticated: true})
	ctx := context.Background()
	before, err := f.s.Store(ctx, "@a:cirrus.test", upload([]byte("old"), ""))
	if err != nil {
		t.Fatal(err)
	}
	f.s.cfg.LegacyUnauthenticated = false // the operator freezes legacy access
	after, err := f.s.Store(ctx, "@a:cirrus.test", upload([]byte("new"), ""))
	if err != nil {
		t.Fatal(err)
	}
	if !f.s.LegacyAllowed(before) || f.s.LegacyAllowed(after) {
		t.Fatalf("legacy access: before %v, after %v", f.s.LegacyAllowed(before), f.s.LegacyAllowed(after))
	}
}

func TestThumbnailCache(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := context.Background()
	r, err := f.s.Store(ctx, "@a:cirrus.test", upload(mediatest.PNG(1000, 700), "image/png"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Image == nil || r.Image.Width != 1000 {
		t.Fatalf("image info %+v", r.Image)
	}
	c, err := f.s.Thumbnail(ctx, r, 300, 200, MethodScale, false)
	if err != nil || c.Data == nil || c.ContentType != "image/png" {
		t.Fatalf("first thumbnail: %+v %v", c, err)
	}
	c2, err := f.s.Thumbnail(ctx, r, 300, 200, MethodScale, false)
	if err != nil || c2.Body == nil || c2.Size != c.Size {
		t.Fatalf("cached thumbnail: %+v %v", c2, err)
	}
	c2.Close()
	// Small images are their own thumbnail.
	small, _ := f.s.Store(ctx, "@a:cirrus.test", upload(mediatest.PNG(20, 20), "image/png"))
	c3, err := f.s.Thumbnail(ctx, small, 96, 96, MethodCrop, false)
	if err != nil || c3.Key != small.Blob {
		t.Fatalf("small image: %+v %v", c3, err)
	}
	// Not an image type: no thumbnail.
	txt, _ := f.s.Store(ctx, "@a:cirrus.test", upload(mediatest.PNG(20, 20), "text/plain"))
	_, err = f.s.Thumbnail(ctx, txt, 96, 96, MethodCrop, false)
	wantStatus(t, "text", err, 400)
	// An image type with broken bytes: a clean 400.
	bad, _ := f.s.Store(ctx, "@a:cirrus.test", upload([]byte("\x89PNG\r\n\x1a\nbroken"), "image/png"))
	_, err = f.s.Thumbnail(ctx, bad, 96, 96, MethodCrop, false)
	wantStatus(t, "broken", err, 400)
}

func TestPublicAddress(t *testing.T) {
	blocked := []string{"127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "169.254.1.1",
		"100.64.0.1", "100.100.100.200", "0.0.0.0", "0.1.2.3", "224.0.0.1", "255.255.255.255", "192.0.0.192", "198.18.0.1",
		"::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::7f00:1",
		"2002:7f00:1::1", "2001:db8::1", "ff02::1"}
	for _, s := range blocked {
		if netguard.PublicAddress(netip.MustParseAddr(s)) {
			t.Errorf("%s allowed", s)
		}
	}
	for _, s := range []string{"8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e"} {
		if !netguard.PublicAddress(netip.MustParseAddr(s)) {
			t.Errorf("%s refused", s)
		}
	}
}

func TestPreviewGuard(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := context.Background()
	hit := make(chan string, 10)
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hit <- r.URL.Path
		fmt.Fprint(w, "<title>secret</title>")
	}))
	defer target.Close()
	tu, _ := url.Parse(target.URL)
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Same server, reached by another loopback address.
		http.Redirect(w, r, "http://127.0.0.2:"+tu.Port()+"/inner", http.StatusFound)
	}))
	defer redirector.Close()

	// Default policy: loopback is refused, by address and by name.
	for _, u := range []string{target.URL + "/a", "http://localhost:" + tu.Port() + "/b"} {
		_, err := f.s.Preview(ctx, "@a:cirrus.test", u, 0)
		wantStatus(t, u, err, 403)
	}
	// A policy allowing only 127.0.0.1 still refuses where a redirect goes.
	f.s.SetPreviewPolicy(func(a netip.Addr) bool { return a == netip.MustParseAddr("127.0.0.1") })
	_, err := f.s.Preview(ctx, "@a:cirrus.test", redirector.URL+"/r", 0)
	wantStatus(t, "redirect to a refused address", err, 403)
	select {
	case p := <-hit:
		t.Fatalf("the target was reached at %s", p)
	default:
	}
	for _, u := range []string{"", "ftp://x.org/", "/relative", "http://", "http://user:pw@x.org/", "javascript:alert(1)", "http://x.org/" + strings.Repeat("a", 3000)} {
		_, err := f.s.Preview(ctx, "@a:cirrus.test", u, 0)
		if err == nil {
			t.Errorf("preview of %q accepted", u)
		}
	}
}

func TestPreview(t *testing.T) {
	f := newFixture(t, Config{PreviewAllowPrivate: true, PreviewCacheTime: time.Hour})
	ctx := context.Background()
	var fetches sync.Map
	count := func(p string) int { v, _ := fetches.Load(p); n, _ := v.(int); return n }
	png := mediatest.PNG(64, 32)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Store(r.URL.Path, count(r.URL.Path)+1)
		switch r.URL.Path {
		case "/page":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprint(w, `<html><head><title>Fallback</title>
				<meta property="og:title" content="Real Title">
				<meta property="og:description" content="A description">
				<meta property="og:image" content="/img.png">
				<meta property="og:image:width" content="9999">
				</head><body>hi</body></html>`)
		case "/plain":
			w.Header().Set("Content-Type", "text/html; charset=iso-8859-1")
			w.Write([]byte("<title>Caf\xe9</title><meta name=\"description\" content=\"d\"><img src=\"http://" + r.Host + "/missing.png\">"))
		case "/img.png":
			w.Header().Set("Content-Type", "image/png")
			w.Write(png)
		case "/file.bin":
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write([]byte{1, 2, 3})
		case "/gone":
			http.NotFound(w, r)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()

	og, err := f.s.Preview(ctx, "@a:cirrus.test", srv.URL+"/page#frag", 0)
	if err != nil {
		t.Fatal(err)
	}
	if og["og:title"] != "Real Title" || og["og:description"] != "A description" || og["og:image:type"] != "image/png" ||
		og["matrix:image:size"] != int64(len(png)) || og["og:image:width"] != 64 || og["og:image:height"] != 32 {
		t.Fatalf("preview: %v", og)
	}
	mxc, _ := og["og:image"].(string)
	server, id, _ := strings.Cut(strings.TrimPrefix(mxc, "mxc://"), "/")
	rec, err := f.s.Lookup(ctx, server, id, 0, true)
	if err != nil || rec.Size != int64(len(png)) {
		t.Fatalf("preview image %s: %+v %v", mxc, rec, err)
	}
	// Cached: no second fetch, within the cache time and for a ts after it.
	if _, err := f.s.Preview(ctx, "@a:cirrus.test", srv.URL+"/page", 0); err != nil || count("/page") != 1 {
		t.Fatalf("second preview fetched again (%d) or failed: %v", count("/page"), err)
	}
	f.clock.add(2 * time.Hour)
	if _, err := f.s.Preview(ctx, "@a:cirrus.test", srv.URL+"/page", f.clock.now().Add(-90*time.Minute).UnixMilli()); err != nil || count("/page") != 1 {
		t.Fatalf("preview for an old ts fetched again (%d): %v", count("/page"), err)
	}
	if _, err := f.s.Preview(ctx, "@a:cirrus.test", srv.URL+"/page", 0); err != nil || count("/page") != 2 {
		t.Fatalf("stale preview not refreshed (%d): %v", count("/page"), err)
	}

	og, err = f.s.Preview(ctx, "@a:cirrus.test", srv.URL+"/plain", 0)
	if err != nil || og["og:title"] != "Café" || og["og:description"] != "d" || og["og:image"] != nil {
		t.Fatalf("fallbacks and charset: %v %v", og, err)
	}
	og, err = f.s.Preview(ctx, "@a:cirrus.test", srv.URL+"/img.png", 0)
	if err != nil || og["og:image:type"] != "image/png" || og["og:image:width"] != 64 {
		t.Fatalf("image URL: %v %v", og, err)
	}
	og, err = f.s.Preview(ctx, "@a:cirrus.test", srv.URL+"/file.bin", 0)
	if err != nil || len(og) != 0 {
		t.Fatalf("other content: %v %v", og, err)
	}
	_, err = f.s.Preview(ctx, "@a:cirrus.test", srv.URL+"/gone", 0)
	wantStatus(t, "404 page", err, 502)
}

func TestParseHTMLLimits(t *testing.T) {
	base, _ := url.Parse("https://example.org/dir/page")
	long := strings.Repeat("é", 5000)
	var b strings.Builder
	b.WriteString(`<meta property="og:title" content="` + long + `">`)
	for i := range 200 {
		fmt.Fprintf(&b, `<meta property="og:x%d" content="v">`, i)
	}
	b.WriteString(`<meta property="og:image" content="javascript:alert(1)"><script>var x="<title>no</title>"</script>`)
	og := ParseHTML(strings.NewReader(b.String()), "text/html", base)
	if s, _ := og["og:title"].(string); len([]rune(s)) != maxPreviewValue {
		t.Fatalf("title not clipped: %d", len([]rune(s)))
	}
	if len(og) > maxPreviewKeys {
		t.Fatalf("%d keys", len(og))
	}
	if og["og:image"] != nil {
		t.Fatalf("javascript image kept: %v", og["og:image"])
	}
	og = ParseHTML(strings.NewReader(`<img src="../a.png">`), "", base)
	if og["og:image"] != "https://example.org/a.png" {
		t.Fatalf("relative image: %v", og)
	}
}
