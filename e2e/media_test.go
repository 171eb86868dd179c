package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/media/mediatest"
	"github.com/cirrus-matrix/cirrus/core/mediaapi"
	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

// hostRouter sends requests for the server's host through the engine's
// transport (for the lambda engine, the API Gateway stand-in) and every
// other request (a redirect to the S3 stand-in) over the network, as a real
// client would.
type hostRouter struct {
	server http.RoundTripper
	host   string
}

func (h hostRouter) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host == h.host {
		return h.server.RoundTrip(r)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// mediaHTTP is a client for env that follows redirects off the server.
func mediaHTTP(env *testenv.Env) *http.Client {
	u, _ := url.Parse(env.URL)
	tr := env.HTTP.Transport
	if tr == nil {
		tr = http.DefaultTransport
	}
	return &http.Client{Transport: hostRouter{server: tr, host: u.Host}}
}

func noRedirects(c *http.Client) *http.Client {
	cp := *c
	cp.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &cp
}

// mediaClient is a mautrix client logged in as c's user that can follow
// media redirects.
func mediaClient(env *testenv.Env, c *mautrix.Client) *mautrix.Client {
	mc, _ := mautrix.NewClient(env.URL, c.UserID, c.AccessToken)
	mc.Client = mediaHTTP(env)
	return mc
}

type mediaResp struct {
	status int
	header http.Header
	body   []byte
	json   map[string]any
}

func mediaDo(t *testing.T, hc *http.Client, method, u, token string, body []byte, hdr map[string]string) mediaResp {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, u, err)
	}
	out := mediaResp{status: resp.StatusCode, header: resp.Header, body: raw}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		_ = json.Unmarshal(raw, &out.json)
	}
	return out
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func uploadMXC(t *testing.T, env *testenv.Env, token, contentType, filename string, data []byte) id.ContentURI {
	t.Helper()
	u := env.URL + "/_matrix/media/v3/upload"
	if filename != "" {
		u += "?filename=" + url.QueryEscape(filename)
	}
	r := mediaDo(t, mediaHTTP(env), "POST", u, token, data, map[string]string{"Content-Type": contentType})
	if r.status != 200 {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}
	mxc, err := id.ParseContentURI(r.json["content_uri"].(string))
	if err != nil || mxc.Homeserver != "cirrus.test" {
		t.Fatalf("content_uri %v: %v", r.json, err)
	}
	return mxc
}

func downloadPath(mxc id.ContentURI) string {
	return "/_matrix/client/v1/media/download/" + mxc.Homeserver + "/" + mxc.FileID
}

// checkServingHeaders checks the safe-serving headers of a media answer.
func checkServingHeaders(t *testing.T, h http.Header, contentType, disposition string) {
	t.Helper()
	want := map[string]string{
		"Content-Type":                 contentType,
		"Content-Disposition":          disposition,
		"Content-Security-Policy":      mediaapi.ContentSecurityPolicy,
		"X-Content-Type-Options":       "nosniff",
		"Cross-Origin-Resource-Policy": "cross-origin",
		"Access-Control-Allow-Origin":  "*",
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if h.Get("Cache-Control") == "" {
		t.Error("no Cache-Control")
	}
}

func TestMediaRoundTrip(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		hc := mediaHTTP(env)
		tok := alice.AccessToken

		// Small text: inline, with its file name, on both download paths.
		mxc := uploadMXC(t, env, tok, "text/plain", "hello world.txt", []byte("hello, media"))
		r := mediaDo(t, hc, "GET", env.URL+downloadPath(mxc), tok, nil, nil)
		if r.status != 200 || string(r.body) != "hello, media" {
			t.Fatalf("download: %d %q", r.status, r.body)
		}
		checkServingHeaders(t, r.header, "text/plain", `inline; filename="hello world.txt"`)
		if !strings.Contains(r.header.Get("Cache-Control"), "private") {
			t.Errorf("authenticated media cached publicly: %q", r.header.Get("Cache-Control"))
		}
		r = mediaDo(t, hc, "GET", env.URL+downloadPath(mxc)+"/other%20name.txt", tok, nil, nil)
		if r.status != 200 || r.header.Get("Content-Disposition") != `inline; filename="other name.txt"` {
			t.Fatalf("download with a file name: %d %v", r.status, r.header)
		}
		r = mediaDo(t, hc, "HEAD", env.URL+downloadPath(mxc), tok, nil, nil)
		if r.status != 200 || len(r.body) != 0 {
			t.Fatalf("HEAD: %d %q", r.status, r.body)
		}

		// Unsafe types are attachments; no Content-Type means octet-stream;
		// non-ASCII names survive.
		html := uploadMXC(t, env, tok, "text/html", "", []byte("<script>alert(1)</script>"))
		r = mediaDo(t, hc, "GET", env.URL+downloadPath(html), tok, nil, nil)
		checkServingHeaders(t, r.header, "text/html", "attachment")
		raw := mediaDo(t, hc, "POST", env.URL+"/_matrix/media/v3/upload?filename="+url.QueryEscape("smörgås.bin"), tok, []byte{0, 1, 2, 255}, nil)
		bin, _ := id.ParseContentURI(raw.json["content_uri"].(string))
		r = mediaDo(t, hc, "GET", env.URL+downloadPath(bin), tok, nil, nil)
		if !bytes.Equal(r.body, []byte{0, 1, 2, 255}) {
			t.Fatalf("binary bytes changed: %v", r.body)
		}
		checkServingHeaders(t, r.header, "application/octet-stream", "attachment; filename*=utf-8''sm%C3%B6rg%C3%A5s.bin")

		// A few megabytes, byte-exact, through mautrix-go (upload and
		// authenticated download).
		mc := mediaClient(env, alice)
		big := randomBytes(3<<20 + 12345)
		up, err := mc.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: big, ContentType: "application/zip", FileName: "big.zip"})
		if err != nil {
			t.Fatal(err)
		}
		got, err := mc.DownloadBytes(ctx, up.ContentURI)
		if err != nil || !bytes.Equal(got, big) {
			t.Fatalf("few-MB download: %d bytes, equal %v, %v", len(got), bytes.Equal(got, big), err)
		}
		cfg, err := mc.GetMediaConfig(ctx)
		if err != nil || cfg.UploadSize != 50<<20 {
			t.Fatalf("media config: %+v %v", cfg, err)
		}
		r = mediaDo(t, hc, "GET", env.URL+"/_matrix/media/v3/config", tok, nil, nil)
		if r.status != 200 || r.json["m.upload.size"] != float64(50<<20) {
			t.Fatalf("legacy config: %d %v", r.status, r.json)
		}

		// Legacy unauthenticated endpoints are frozen by default: new media
		// is only reachable with authentication.
		for _, p := range []string{"/_matrix/media/v3/download/cirrus.test/" + mxc.FileID, "/_matrix/media/v3/download/cirrus.test/" + mxc.FileID + "/x.txt",
			"/_matrix/media/v3/thumbnail/cirrus.test/" + mxc.FileID + "?width=32&height=32"} {
			r = mediaDo(t, hc, "GET", env.URL+p, "", nil, nil)
			if r.status != 404 || r.json["errcode"] != "M_NOT_FOUND" {
				t.Fatalf("legacy %s: %d %s", p, r.status, r.body)
			}
		}
		r = mediaDo(t, hc, "GET", env.URL+downloadPath(mxc), "", nil, nil)
		if r.status != 401 || r.json["errcode"] != "M_MISSING_TOKEN" {
			t.Fatalf("authenticated download without a token: %d %s", r.status, r.body)
		}
	})
}

func TestMediaAsyncUpload(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := mediaClient(env, register(t, env, "alice", "pw"))
		bob := register(t, env, "bob", "pw")
		hc := mediaHTTP(env)
		before := time.Now()
		created, err := alice.CreateMXC(ctx)
		if err != nil {
			t.Fatal(err)
		}
		exp := created.UnusedExpiresAt.Time
		if exp.Before(before.Add(23*time.Hour)) || exp.After(time.Now().Add(25*time.Hour)) {
			t.Fatalf("unused_expires_at %v", exp)
		}
		mxc := created.ContentURI
		put := env.URL + "/_matrix/media/v3/upload/" + mxc.Homeserver + "/" + mxc.FileID

		r := mediaDo(t, hc, "GET", env.URL+downloadPath(mxc)+"?timeout_ms=0", alice.AccessToken, nil, nil)
		if r.status != 504 || r.json["errcode"] != "M_NOT_YET_UPLOADED" {
			t.Fatalf("download before upload: %d %s", r.status, r.body)
		}
		r = mediaDo(t, hc, "PUT", put, bob.AccessToken, []byte("intruder"), nil)
		if r.status != 403 || r.json["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("upload to another user's id: %d %s", r.status, r.body)
		}
		data := mediatest.PNG(50, 40)
		if _, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{MXC: mxc, ContentBytes: data, ContentType: "image/png", FileName: "later.png"}); err != nil {
			t.Fatal(err)
		}
		r = mediaDo(t, hc, "PUT", put, alice.AccessToken, []byte("again"), nil)
		if r.status != 409 || r.json["errcode"] != "M_CANNOT_OVERWRITE_MEDIA" {
			t.Fatalf("second upload: %d %s", r.status, r.body)
		}
		r = mediaDo(t, hc, "GET", env.URL+downloadPath(mxc), alice.AccessToken, nil, nil)
		if r.status != 200 || !bytes.Equal(r.body, data) {
			t.Fatalf("download after upload: %d", r.status)
		}
		checkServingHeaders(t, r.header, "image/png", `inline; filename="later.png"`)

		// A download that starts before the upload waits for it.
		created, err = alice.CreateMXC(ctx)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan string, 1)
		go func() {
			// No t.Fatal off the test goroutine: report through the channel.
			req, _ := http.NewRequest("GET", env.URL+downloadPath(created.ContentURI)+"?timeout_ms=10000", nil)
			req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
			resp, err := hc.Do(req)
			if err != nil {
				done <- err.Error()
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			done <- fmt.Sprintf("%d %s", resp.StatusCode, b)
		}()
		time.Sleep(300 * time.Millisecond)
		if _, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{MXC: created.ContentURI, ContentBytes: []byte("worth the wait"), ContentType: "text/plain"}); err != nil {
			t.Fatal(err)
		}
		if got := <-done; got != "200 worth the wait" {
			t.Fatalf("waiting download: %s", got)
		}
	})
}

// Downloads over the redirect threshold go to the blob store directly
// where it can presign (the S3 stand-in on aws and lambda); the embedded
// store streams them.
func TestMediaLargeDownload(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		alice := register(t, env, "alice", "pw")
		hc := mediaHTTP(env)
		data := randomBytes(6<<20 + 7)
		mxc := uploadMXC(t, env, alice.AccessToken, "video/mp4", "clip.mp4", data)

		first := mediaDo(t, noRedirects(hc), "GET", env.URL+downloadPath(mxc), alice.AccessToken, nil, nil)
		switch env.Vars["CIRRUS_STORAGE"] {
		case "aws":
			loc := first.header.Get("Location")
			if first.status != 307 || loc == "" || strings.HasPrefix(loc, env.URL) {
				t.Fatalf("large download on S3: %d, Location %q", first.status, loc)
			}
			if first.header.Get("Cache-Control") != "no-store" {
				t.Errorf("redirect Cache-Control %q", first.header.Get("Cache-Control"))
			}
		default:
			if first.status != 200 || !bytes.Equal(first.body, data) {
				t.Fatalf("large download on the embedded store: %d", first.status)
			}
		}
		r := mediaDo(t, hc, "GET", env.URL+downloadPath(mxc), alice.AccessToken, nil, nil)
		if r.status != 200 || !bytes.Equal(r.body, data) {
			t.Fatalf("following the download: %d, %d bytes", r.status, len(r.body))
		}
		if r.header.Get("Content-Type") != "video/mp4" || r.header.Get("Content-Disposition") != `inline; filename="clip.mp4"` {
			t.Fatalf("headers after the redirect: %v", r.header)
		}
	})
}

func decodeImage(t *testing.T, r mediaResp) (image.Image, string) {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("thumbnail: %d %s", r.status, r.body)
	}
	img, format, err := image.Decode(bytes.NewReader(r.body))
	if err != nil {
		t.Fatalf("thumbnail does not decode: %v", err)
	}
	if ct := r.header.Get("Content-Type"); ct != "image/"+format {
		t.Fatalf("thumbnail Content-Type %s for a %s", ct, format)
	}
	if d := r.header.Get("Content-Disposition"); !strings.HasPrefix(d, "inline") {
		t.Fatalf("thumbnail disposition %q", d)
	}
	return img, format
}

func TestMediaThumbnails(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		alice := register(t, env, "alice", "pw")
		hc := mediaHTTP(env)
		tok := alice.AccessToken
		thumb := func(mxc id.ContentURI, q string) mediaResp {
			return mediaDo(t, hc, "GET", env.URL+"/_matrix/client/v1/media/thumbnail/"+mxc.Homeserver+"/"+mxc.FileID+"?"+q, tok, nil, nil)
		}
		pngMXC := uploadMXC(t, env, tok, "image/png", "a.png", mediatest.PNG(1000, 700))
		jpegMXC := uploadMXC(t, env, tok, "image/jpeg", "b.jpg", mediatest.JPEG(1600, 1200))
		gifMXC := uploadMXC(t, env, tok, "image/gif", "c.gif", mediatest.GIF(400, 300, 3))
		webpMXC := uploadMXC(t, env, tok, "image/webp", "d.webp", mediatest.WebP(300, 200, color.NRGBA{R: 200, G: 30, B: 90, A: 255}))
		smallWebP := mediatest.WebP(20, 20, color.NRGBA{A: 255})
		smallMXC := uploadMXC(t, env, tok, "image/webp", "", smallWebP)

		cases := []struct {
			name   string
			mxc    id.ContentURI
			query  string
			format string
			w, h   int
		}{
			{"png scale", pngMXC, "width=320&height=240&method=scale", "png", 320, 224},
			{"png crop", pngMXC, "width=96&height=96&method=crop", "png", 96, 96},
			{"png default method", pngMXC, "width=600&height=400", "png", 640, 448},
			{"png tiny crop", pngMXC, "width=10&height=10&method=crop", "png", 32, 32},
			{"jpeg scale", jpegMXC, "width=640&height=480&method=scale", "jpeg", 640, 480},
			{"jpeg largest", jpegMXC, "width=2000&height=2000&method=scale", "jpeg", 800, 600},
			{"gif first frame", gifMXC, "width=96&height=96&method=crop", "png", 96, 96},
			{"gif animated=false", gifMXC, "width=96&height=96&method=crop&animated=false", "png", 96, 96},
			{"webp crop", webpMXC, "width=96&height=96&method=crop", "png", 96, 96},
			{"webp that fits is its own thumbnail", webpMXC, "width=100&height=100&method=scale", "webp", 300, 200}, // fits 320x240
			{"small webp is its own thumbnail", smallMXC, "width=96&height=96&method=crop", "webp", 20, 20},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				r := thumb(c.mxc, c.query)
				img, format := decodeImage(t, r)
				if format != c.format || img.Bounds().Dx() != c.w || img.Bounds().Dy() != c.h {
					t.Fatalf("got %s %dx%d, want %s %dx%d", format, img.Bounds().Dx(), img.Bounds().Dy(), c.format, c.w, c.h)
				}
				checkServingHeaders(t, r.header, "image/"+format, r.header.Get("Content-Disposition"))
				// The second request is served from the cache, identical.
				if again := thumb(c.mxc, c.query); !bytes.Equal(again.body, r.body) {
					t.Fatal("cached thumbnail differs")
				}
			})
		}
		t.Run("webp colour", func(t *testing.T) {
			img, _ := decodeImage(t, thumb(webpMXC, "width=32&height=32&method=crop"))
			if r, g, b, _ := img.At(10, 10).RGBA(); r>>8 != 200 || g>>8 != 30 || b>>8 != 90 {
				t.Fatalf("colour %d %d %d", r>>8, g>>8, b>>8)
			}
		})
		t.Run("animated gif", func(t *testing.T) {
			r := thumb(gifMXC, "width=96&height=96&method=crop&animated=true")
			if r.status != 200 || r.header.Get("Content-Type") != "image/gif" {
				t.Fatalf("animated: %d %v", r.status, r.header)
			}
			g, err := gif.DecodeAll(bytes.NewReader(r.body))
			if err != nil || len(g.Image) != 3 || g.Config.Width != 96 || g.Config.Height != 96 {
				t.Fatalf("animated thumbnail: %v", err)
			}
		})
		t.Run("thumbnail with mautrix", func(t *testing.T) {
			resp, err := mediaClient(env, alice).DownloadThumbnail(context.Background(), pngMXC, 240, 320, mautrix.DownloadThumbnailExtra{Method: "scale"})
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			cfg, format, err := image.DecodeConfig(resp.Body)
			if err != nil || format != "png" || cfg.Width != 320 || cfg.Height != 224 {
				t.Fatalf("%s %dx%d %v", format, cfg.Width, cfg.Height, err)
			}
		})
	})
}

func TestMediaBadInput(t *testing.T) {
	for _, engine := range testenv.Engines {
		t.Run(engine, func(t *testing.T) {
			env := testenv.Start(t, engine, map[string]string{"CIRRUS_MAX_UPLOAD_BYTES": "100000"})
			alice := register(t, env, "alice", "pw")
			bob := register(t, env, "bob", "pw")
			tok := alice.AccessToken
			hc := mediaHTTP(env)
			text := uploadMXC(t, env, tok, "text/plain", "", []byte("not an image"))
			broken := uploadMXC(t, env, tok, "image/png", "", append([]byte("\x89PNG\r\n\x1a\n"), randomBytes(300)...))
			truncated := uploadMXC(t, env, tok, "image/jpeg", "", mediatest.JPEG(300, 300)[:400])
			bomb := uploadMXC(t, env, tok, "image/webp", "", mediatest.WebP(16384, 16384, color.NRGBA{A: 255}))
			created := mediaDo(t, hc, "POST", env.URL+"/_matrix/media/v1/create", tok, []byte("{}"), nil).json["content_uri"].(string)
			pending, _ := id.ParseContentURI(created)
			thumbOf := func(m id.ContentURI, q string) string {
				return "/_matrix/client/v1/media/thumbnail/" + m.Homeserver + "/" + m.FileID + "?" + q
			}
			dl := "/_matrix/client/v1/media/download/"
			cases := []struct {
				name, method, path, token string
				body                      []byte
				hdr                       map[string]string
				status                    int
				code                      string
			}{
				{"upload without token", "POST", "/_matrix/media/v3/upload", "", []byte("x"), nil, 401, "M_MISSING_TOKEN"},
				{"upload too large", "POST", "/_matrix/media/v3/upload", tok, make([]byte, 100001), nil, 413, "M_TOO_LARGE"},
				{"upload bad filename", "POST", "/_matrix/media/v3/upload?filename=a%0Ab", tok, []byte("x"), nil, 400, "M_INVALID_PARAM"},
				{"upload long filename", "POST", "/_matrix/media/v3/upload?filename=" + strings.Repeat("n", 300), tok, []byte("x"), nil, 400, "M_INVALID_PARAM"},
				{"create without token", "POST", "/_matrix/media/v1/create", "", nil, nil, 401, "M_MISSING_TOKEN"},
				{"put unknown id", "PUT", "/_matrix/media/v3/upload/cirrus.test/nosuchid", tok, []byte("x"), nil, 404, "M_NOT_FOUND"},
				{"put other server", "PUT", "/_matrix/media/v3/upload/elsewhere.test/" + pending.FileID, tok, []byte("x"), nil, 404, "M_NOT_FOUND"},
				{"put bad id", "PUT", "/_matrix/media/v3/upload/cirrus.test/bad.id", tok, []byte("x"), nil, 400, "M_INVALID_PARAM"},
				{"put other user's id", "PUT", "/_matrix/media/v3/upload/cirrus.test/" + pending.FileID, bob.AccessToken, []byte("x"), nil, 403, "M_FORBIDDEN"},
				{"put too large", "PUT", "/_matrix/media/v3/upload/cirrus.test/" + pending.FileID, tok, make([]byte, 100001), nil, 413, "M_TOO_LARGE"},
				{"put already uploaded", "PUT", "/_matrix/media/v3/upload/cirrus.test/" + text.FileID, tok, []byte("x"), nil, 409, "M_CANNOT_OVERWRITE_MEDIA"},
				{"download missing", "GET", dl + "cirrus.test/nosuchmedia", tok, nil, nil, 404, "M_NOT_FOUND"},
				{"download bad id", "GET", dl + "cirrus.test/a.b", tok, nil, nil, 400, "M_INVALID_PARAM"},
				{"download bad server", "GET", dl + "bad%20server/abc", tok, nil, nil, 400, "M_INVALID_PARAM"},
				{"download remote (no federation yet)", "GET", dl + "elsewhere.test/abc", tok, nil, nil, 502, "M_UNKNOWN"},
				{"legacy remote, allow_remote=false", "GET", "/_matrix/media/v3/download/elsewhere.test/abc?allow_remote=false", "", nil, nil, 404, "M_NOT_FOUND"},
				{"legacy bad allow_remote", "GET", "/_matrix/media/v3/download/elsewhere.test/abc?allow_remote=maybe", "", nil, nil, 400, "M_INVALID_PARAM"},
				{"download pending", "GET", dl + "cirrus.test/" + pending.FileID + "?timeout_ms=0", tok, nil, nil, 504, "M_NOT_YET_UPLOADED"},
				{"download bad timeout", "GET", dl + "cirrus.test/" + text.FileID + "?timeout_ms=-1", tok, nil, nil, 400, "M_INVALID_PARAM"},
				{"download bad file name", "GET", dl + "cirrus.test/" + text.FileID + "/a%01b", tok, nil, nil, 400, "M_INVALID_PARAM"},
				{"thumbnail without width", "GET", thumbOf(text, "height=32"), tok, nil, nil, 400, "M_MISSING_PARAM"},
				{"thumbnail without height", "GET", thumbOf(text, "width=32"), tok, nil, nil, 400, "M_MISSING_PARAM"},
				{"thumbnail bad width", "GET", thumbOf(text, "width=abc&height=32"), tok, nil, nil, 400, "M_INVALID_PARAM"},
				{"thumbnail zero height", "GET", thumbOf(text, "width=32&height=0"), tok, nil, nil, 400, "M_INVALID_PARAM"},
				{"thumbnail negative width", "GET", thumbOf(text, "width=-5&height=32"), tok, nil, nil, 400, "M_INVALID_PARAM"},
				{"thumbnail bad method", "GET", thumbOf(text, "width=32&height=32&method=zoom"), tok, nil, nil, 400, "M_INVALID_PARAM"},
				{"thumbnail bad animated", "GET", thumbOf(text, "width=32&height=32&animated=yes"), tok, nil, nil, 400, "M_INVALID_PARAM"},
				{"thumbnail of text", "GET", thumbOf(text, "width=32&height=32"), tok, nil, nil, 400, "M_UNKNOWN"},
				{"thumbnail of a broken png", "GET", thumbOf(broken, "width=32&height=32"), tok, nil, nil, 400, "M_UNKNOWN"},
				{"thumbnail of a truncated jpeg", "GET", thumbOf(truncated, "width=32&height=32"), tok, nil, nil, 400, "M_UNKNOWN"},
				{"thumbnail of a pixel bomb", "GET", thumbOf(bomb, "width=32&height=32"), tok, nil, nil, 413, "M_TOO_LARGE"},
				{"thumbnail without token", "GET", thumbOf(text, "width=32&height=32"), "", nil, nil, 401, "M_MISSING_TOKEN"},
				{"preview without url", "GET", "/_matrix/client/v1/media/preview_url", tok, nil, nil, 400, "M_MISSING_PARAM"},
				{"preview bad url", "GET", "/_matrix/client/v1/media/preview_url?url=ftp%3A%2F%2Fx.org%2F", tok, nil, nil, 400, "M_INVALID_PARAM"},
				{"preview bad ts", "GET", "/_matrix/client/v1/media/preview_url?url=https%3A%2F%2Fx.org%2F&ts=soon", tok, nil, nil, 400, "M_INVALID_PARAM"},
				{"preview of loopback (SSRF)", "GET", "/_matrix/client/v1/media/preview_url?url=" + url.QueryEscape("http://127.0.0.1:1/"), tok, nil, nil, 403, "M_FORBIDDEN"},
				{"preview of metadata (SSRF)", "GET", "/_matrix/client/v1/media/preview_url?url=" + url.QueryEscape("http://169.254.169.254/latest/meta-data/"), tok, nil, nil, 403, "M_FORBIDDEN"},
				{"preview of localhost (SSRF)", "GET", "/_matrix/media/v3/preview_url?url=" + url.QueryEscape("http://localhost:1/"), tok, nil, nil, 403, "M_FORBIDDEN"},
				{"legacy preview without token", "GET", "/_matrix/media/v3/preview_url?url=https%3A%2F%2Fx.org%2F", "", nil, nil, 401, "M_MISSING_TOKEN"},
				{"config without token", "GET", "/_matrix/client/v1/media/config", "", nil, nil, 401, "M_MISSING_TOKEN"},
				{"wrong method", "DELETE", "/_matrix/media/v3/upload", tok, nil, nil, 405, "M_UNRECOGNIZED"},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					r := mediaDo(t, hc, c.method, env.URL+c.path, c.token, c.body, c.hdr)
					if r.status != c.status || r.json["errcode"] != c.code {
						t.Fatalf("got %d %s, want %d %s", r.status, r.body, c.status, c.code)
					}
					if msg, _ := r.json["error"].(string); msg == "" {
						t.Fatalf("no error message in %s", r.body)
					}
				})
			}
			t.Run("config shows the limit", func(t *testing.T) {
				r := mediaDo(t, hc, "GET", env.URL+"/_matrix/client/v1/media/config", tok, nil, nil)
				if r.json["m.upload.size"] != float64(100000) {
					t.Fatalf("config %s", r.body)
				}
			})
			t.Run("body shorter than Content-Length", func(t *testing.T) {
				before := countBlobs(env)
				st := truncatedUpload(t, env, tok)
				if st != 400 {
					t.Fatalf("truncated upload answered %d", st)
				}
				if after := countBlobs(env); after != before {
					t.Fatalf("a truncated upload stored something: %d blobs, then %d", before, after)
				}
			})
		})
	}
}

// truncatedUpload sends an upload whose body is shorter than its
// Content-Length: over a raw connection that then stops sending (the all-in-
// one engines), or as an API Gateway event whose header disagrees with the
// body (lambda).
func truncatedUpload(t *testing.T, env *testenv.Env, tok string) int {
	t.Helper()
	u, _ := url.Parse(env.URL)
	if env.HTTP.Transport != nil && fmt.Sprintf("%T", env.HTTP.Transport) != "*http.Transport" {
		req, _ := http.NewRequest("POST", env.URL+"/_matrix/media/v3/upload", strings.NewReader("only ten b"))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Length", "1000")
		resp, err := env.HTTP.Transport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\nonly ten b", u.Host, tok)
	conn.(*net.TCPConn).CloseWrite()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// countBlobs counts the embedded store's media files (-1 on other engines,
// whose bucket the test cannot list; there the 400 is what is checked).
func countBlobs(env *testenv.Env) int {
	if env.Vars["CIRRUS_STORAGE"] == "aws" {
		return -1
	}
	n := 0
	filepath.Walk(filepath.Join(env.Vars["CIRRUS_DATA_DIR"], "media"), func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n++
		}
		return nil
	})
	return n
}

// With legacy access on, the unauthenticated endpoints serve media; with a
// transport limit (what a Lambda has), large legacy downloads that may not
// be redirected are refused with 502 M_TOO_LARGE, and redirected when the
// client allows it.
func TestMediaLegacyAndTransportLimit(t *testing.T) {
	for _, engine := range []string{"embedded", "aws"} {
		t.Run(engine, func(t *testing.T) {
			env := testenv.Start(t, engine, map[string]string{
				"CIRRUS_MEDIA_LEGACY_UNAUTHENTICATED": "true",
				"CIRRUS_MEDIA_DIRECT_LIMIT_BYTES":     "2000",
				"CIRRUS_MEDIA_REDIRECT_BYTES":         "1000",
			})
			alice := register(t, env, "alice", "pw")
			hc := mediaHTTP(env)
			small := uploadMXC(t, env, alice.AccessToken, "image/png", "s.png", mediatest.PNG(10, 10))
			r := mediaDo(t, hc, "GET", env.URL+"/_matrix/media/v3/download/cirrus.test/"+small.FileID, "", nil, nil)
			if r.status != 200 || !bytes.Equal(r.body, mediatest.PNG(10, 10)) {
				t.Fatalf("legacy download: %d %s", r.status, r.body)
			}
			checkServingHeaders(t, r.header, "image/png", `inline; filename="s.png"`)
			if !strings.Contains(r.header.Get("Cache-Control"), "public") {
				t.Errorf("legacy Cache-Control %q", r.header.Get("Cache-Control"))
			}
			r = mediaDo(t, hc, "GET", env.URL+"/_matrix/media/v3/thumbnail/cirrus.test/"+small.FileID+"?width=32&height=32", "", nil, nil)
			if r.status != 200 || r.header.Get("Content-Type") != "image/png" {
				t.Fatalf("legacy thumbnail: %d %s", r.status, r.body)
			}
			r = mediaDo(t, hc, "GET", env.URL+"/_matrix/client/v1/media/config", alice.AccessToken, nil, nil)
			if r.json["m.upload.size"] != float64(2000) {
				t.Fatalf("config under a transport limit: %s", r.body)
			}

			// 1500 bytes: over the redirect threshold (1000).
			data := randomBytes(1500)
			mxc := uploadMXC(t, env, alice.AccessToken, "application/pdf", "doc.pdf", data)
			legacy := env.URL + "/_matrix/media/v3/download/cirrus.test/" + mxc.FileID
			r = mediaDo(t, noRedirects(hc), "GET", legacy+"?allow_redirect=true", "", nil, nil)
			wantRedirect := engine == "aws"
			if wantRedirect && r.status != 307 || !wantRedirect && r.status != 200 {
				t.Fatalf("legacy download with allow_redirect: %d", r.status)
			}
			r = mediaDo(t, noRedirects(hc), "GET", legacy, "", nil, nil)
			if r.status != 200 || !bytes.Equal(r.body, data) {
				t.Fatalf("legacy download without allow_redirect must send the bytes: %d", r.status)
			}
			checkServingHeaders(t, r.header, "application/pdf", `attachment; filename="doc.pdf"`)

			// 3000 bytes: over the transport limit too.
			huge := uploadMXC(t, env, alice.AccessToken, "application/pdf", "", randomBytes(3000))
			r = mediaDo(t, noRedirects(hc), "GET", env.URL+"/_matrix/media/v3/download/cirrus.test/"+huge.FileID, "", nil, nil)
			if r.status != 502 || r.json["errcode"] != "M_TOO_LARGE" {
				t.Fatalf("legacy download over the transport limit: %d %s", r.status, r.body)
			}
			r = mediaDo(t, hc, "GET", env.URL+downloadPath(huge), alice.AccessToken, nil, nil)
			if engine == "aws" && r.status != 200 || engine == "embedded" && r.status != 502 {
				t.Fatalf("authenticated download over the transport limit: %d %s", r.status, r.body)
			}
		})
	}
}

func TestMediaPreviewURL(t *testing.T) {
	png := mediatest.PNG(120, 60)
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/article":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprint(w, `<!doctype html><html><head>
				<title>Ignored title</title>
				<meta property="og:title" content="Cirrus &amp; friends">
				<meta property="og:description" content="Media on S3">
				<meta property="og:type" content="article">
				<meta property="og:image" content="/cover.png">
			</head><body><p>text</p></body></html>`)
		case "/cover.png":
			w.Header().Set("Content-Type", "image/png")
			w.Write(png)
		case "/redirect":
			http.Redirect(w, r, "/article", http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	defer site.Close()
	for _, engine := range testenv.Engines {
		t.Run(engine, func(t *testing.T) {
			env := testenv.Start(t, engine, map[string]string{"CIRRUS_URL_PREVIEW_ALLOW_PRIVATE": "true"})
			ctx := context.Background()
			alice := mediaClient(env, register(t, env, "alice", "pw"))
			p, err := alice.GetURLPreview(ctx, site.URL+"/redirect")
			if err != nil {
				t.Fatal(err)
			}
			if p.Title != "Cirrus & friends" || p.Description != "Media on S3" || p.Type != "article" || p.ImageType != "image/png" ||
				int(p.ImageSize) != len(png) || int(p.ImageWidth) != 120 || int(p.ImageHeight) != 60 {
				t.Fatalf("preview %+v", p)
			}
			img, err := p.ImageURL.Parse()
			if err != nil {
				t.Fatal(err)
			}
			got, err := alice.DownloadBytes(ctx, img)
			if err != nil || !bytes.Equal(got, png) {
				t.Fatalf("preview image: %v", err)
			}
			// The legacy path answers the same (cached) preview.
			r := mediaDo(t, mediaHTTP(env), "GET", env.URL+"/_matrix/media/v3/preview_url?url="+url.QueryEscape(site.URL+"/redirect"), alice.AccessToken, nil, nil)
			if r.status != 200 || r.json["og:image"] != string(p.ImageURL) {
				t.Fatalf("legacy preview: %d %s", r.status, r.body)
			}
			r = mediaDo(t, mediaHTTP(env), "GET", env.URL+"/_matrix/client/v1/media/preview_url?url="+url.QueryEscape(site.URL+"/missing"), alice.AccessToken, nil, nil)
			if r.status != 502 {
				t.Fatalf("preview of a 404 page: %d %s", r.status, r.body)
			}
		})
	}
}
