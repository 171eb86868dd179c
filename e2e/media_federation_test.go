package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/media"
	"github.com/cirrus-matrix/cirrus/core/media/mediatest"
	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

// mediaFedEngines runs a media federation test on the embedded engine and
// on the AWS stand-ins (S3 for the bytes).
func mediaFedEngines(t *testing.T, n int, f func(t *testing.T, srv []*testenv.FedServer)) {
	for _, eng := range []string{"embedded", "aws"} {
		t.Run(eng, func(t *testing.T) { f(t, testenv.StartFederationOn(t, eng, n, nil)) })
	}
}

// fedUpload uploads data as a user of s and returns its mxc:// URI.
func fedUpload(t *testing.T, s *testenv.FedServer, token, contentType, filename string, data []byte) id.ContentURI {
	t.Helper()
	u := s.URL + "/_matrix/media/v3/upload?filename=" + url.QueryEscape(filename)
	r := mediaDo(t, s.HTTP, "POST", u, token, data, map[string]string{"Content-Type": contentType})
	if r.status != 200 {
		t.Fatalf("upload on %s: %d %s", s.Name, r.status, r.body)
	}
	mxc, err := id.ParseContentURI(r.json["content_uri"].(string))
	if err != nil || mxc.Homeserver != s.Name {
		t.Fatalf("content_uri %v: %v", r.json, err)
	}
	return mxc
}

// fedMedia is a signed federation media request from one server to another,
// answered as the raw response (the caller closes its body).
func fedMedia(t *testing.T, from *testenv.FedServer, to, kind, mediaID string, q url.Values) *http.Response {
	t.Helper()
	_, resp, err := from.App.Server.Federation().Client.MakeFullRequest(context.Background(), mfed.RequestParams{
		ServerName: to, Method: http.MethodGet, Path: mfed.URLPath{"v1", "media", kind, mediaID}, Query: q,
		Authenticate: true, DontReadBody: true,
	})
	if err != nil {
		t.Fatalf("federation %s of %s: %v", kind, mediaID, err)
	}
	return resp
}

// multipartMedia parses a federation media answer with mime/multipart:
// the metadata part, then the content part's headers and bytes.
func multipartMedia(t *testing.T, resp *http.Response) (meta map[string]any, hdr map[string]string, body []byte) {
	t.Helper()
	defer resp.Body.Close()
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		t.Fatalf("answer Content-Type %q", resp.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	p, err := mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	if ct := p.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("metadata part Content-Type %q", ct)
	}
	if err := json.NewDecoder(p).Decode(&meta); err != nil {
		t.Fatalf("metadata part: %v", err)
	}
	p, err = mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	hdr = map[string]string{}
	for _, k := range []string{"Content-Type", "Content-Disposition", "Location"} {
		hdr[k] = p.Header.Get(k)
	}
	if body, err = io.ReadAll(p); err != nil {
		t.Fatal(err)
	}
	if _, err := mr.NextPart(); err != io.EOF {
		t.Fatalf("more than two parts: %v", err)
	}
	return meta, hdr, body
}

func remoteDownload(s *testenv.FedServer, mxc id.ContentURI) string {
	return s.URL + "/_matrix/client/v1/media/download/" + mxc.Homeserver + "/" + mxc.FileID
}

func remoteThumb(s *testenv.FedServer, mxc id.ContentURI, w, h int, method string) string {
	return fmt.Sprintf("%s/_matrix/client/v1/media/thumbnail/%s/%s?width=%d&height=%d&method=%s", s.URL, mxc.Homeserver, mxc.FileID, w, h, method)
}

// Bob on B downloads Alice's upload on A and a thumbnail of it through B;
// once cached, B serves both with A gone.
func TestMediaFederationDownload(t *testing.T) {
	mediaFedEngines(t, 2, func(t *testing.T, srv []*testenv.FedServer) {
		a, b := srv[0], srv[1]
		alice := fedUser(t, a, "alice")
		bob := fedUser(t, b, "bob")
		pic := mediatest.PNG(400, 300)
		mxc := fedUpload(t, a, alice.AccessToken, "image/png", "cat.png", pic)

		check := func(when string) {
			r := mediaDo(t, b.HTTP, "GET", remoteDownload(b, mxc), bob.AccessToken, nil, nil)
			if r.status != 200 || !bytes.Equal(r.body, pic) {
				t.Fatalf("%s: download through B: %d %.200s", when, r.status, r.body)
			}
			checkServingHeaders(t, r.header, "image/png", `inline; filename="cat.png"`)
			th := mediaDo(t, b.HTTP, "GET", remoteThumb(b, mxc, 30, 30, "crop"), bob.AccessToken, nil, nil)
			img, _ := decodeImage(t, th)
			if sz := img.Bounds().Size(); sz != (image.Point{32, 32}) {
				t.Fatalf("%s: remote crop thumbnail is %v, want 32x32", when, sz)
			}
			th = mediaDo(t, b.HTTP, "GET", remoteThumb(b, mxc, 300, 200, "scale"), bob.AccessToken, nil, nil)
			img, _ = decodeImage(t, th)
			if sz := img.Bounds().Size(); sz != (image.Point{320, 240}) {
				t.Fatalf("%s: remote scale thumbnail is %v, want 320x240", when, sz)
			}
		}
		check("first fetch")

		// Unknown media on A is 404 for bob too.
		r := mediaDo(t, b.HTTP, "GET", b.URL+"/_matrix/client/v1/media/download/"+a.Name+"/nosuchmedia", bob.AccessToken, nil, nil)
		if r.status != 404 || r.json["errcode"] != "M_NOT_FOUND" {
			t.Fatalf("unknown remote media: %d %s", r.status, r.body)
		}

		// With A stopped, everything comes from B's cache, and thumbnail
		// sizes never asked for are made from the cached original.
		a.Stop()
		check("from the cache")
		th := mediaDo(t, b.HTTP, "GET", remoteThumb(b, mxc, 90, 90, "crop"), bob.AccessToken, nil, nil)
		if img, _ := decodeImage(t, th); img.Bounds().Size() != (image.Point{96, 96}) {
			t.Fatalf("new box from the cached original: %v, want 96x96", img.Bounds().Size())
		}
		// Not cached and A unreachable: 502.
		r = mediaDo(t, b.HTTP, "GET", b.URL+"/_matrix/client/v1/media/download/"+a.Name+"/othermedia", bob.AccessToken, nil, nil)
		if r.status != 502 || r.json["errcode"] != "M_UNKNOWN" {
			t.Fatalf("unreachable remote: %d %s", r.status, r.body)
		}
		// allow_remote=false on the legacy endpoint never goes remote.
		r = mediaDo(t, b.HTTP, "GET", b.URL+"/_matrix/media/v3/download/"+a.Name+"/othermedia?allow_remote=false", "", nil, nil)
		if r.status != 404 || r.json["errcode"] != "M_NOT_FOUND" {
			t.Fatalf("allow_remote=false: %d %s", r.status, r.body)
		}
	})
}

// The federation endpoints answer multipart/mixed to signed requests only.
func TestMediaFederationEndpoints(t *testing.T) {
	mediaFedEngines(t, 2, func(t *testing.T, srv []*testenv.FedServer) {
		a, b := srv[0], srv[1]
		alice := fedUser(t, a, "alice")
		doc := []byte("a text document")
		mxc := fedUpload(t, a, alice.AccessToken, "text/plain", "notes.txt", doc)

		meta, hdr, body := multipartMedia(t, fedMedia(t, b, a.Name, "download", mxc.FileID, nil))
		if len(meta) != 0 || hdr["Content-Type"] != "text/plain" || hdr["Content-Disposition"] != `inline; filename="notes.txt"` || !bytes.Equal(body, doc) {
			t.Fatalf("download answer: meta %v, headers %v, body %q", meta, hdr, body)
		}

		pic := mediatest.JPEG(200, 100)
		pmxc := fedUpload(t, a, alice.AccessToken, "image/jpeg", "p.jpg", pic)
		_, hdr, body = multipartMedia(t, fedMedia(t, b, a.Name, "thumbnail", pmxc.FileID, url.Values{"width": {"32"}, "height": {"32"}, "method": {"crop"}}))
		img, format, err := image.Decode(bytes.NewReader(body))
		if err != nil || format != "jpeg" || hdr["Content-Type"] != "image/jpeg" || img.Bounds().Dx() != 32 {
			t.Fatalf("thumbnail answer: %v %s %v", err, format, hdr)
		}

		// Errors are JSON, with the spec's codes.
		for _, tc := range []struct {
			kind, media string
			q           url.Values
			status      int
			code        string
		}{
			{"download", "nosuchmedia", nil, 404, "M_NOT_FOUND"},
			{"thumbnail", pmxc.FileID, url.Values{"height": {"32"}}, 400, "M_MISSING_PARAM"},
			{"thumbnail", mxc.FileID, url.Values{"width": {"32"}, "height": {"32"}}, 400, "M_UNKNOWN"},
		} {
			_, _, err := b.App.Server.Federation().Client.MakeFullRequest(context.Background(), mfed.RequestParams{
				ServerName: a.Name, Method: http.MethodGet, Path: mfed.URLPath{"v1", "media", tc.kind, tc.media}, Query: tc.q, Authenticate: true,
			})
			if status(err) != tc.status || errcode(err) != tc.code {
				t.Errorf("%s %s %v: %v, want %d %s", tc.kind, tc.media, tc.q, err, tc.status, tc.code)
			}
		}

		// Without an X-Matrix signature: 401.
		for _, p := range []string{"/_matrix/federation/v1/media/download/" + mxc.FileID, "/_matrix/federation/v1/media/thumbnail/" + pmxc.FileID + "?width=32&height=32"} {
			resp, err := testenv.FedHTTP.Get(a.FedURL + p)
			if err != nil {
				t.Fatal(err)
			}
			var e map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&e)
			resp.Body.Close()
			if resp.StatusCode != 401 || e["errcode"] != "M_UNAUTHORIZED" {
				t.Fatalf("unsigned %s: %d %v", p, resp.StatusCode, e)
			}
		}
	})
}

// legacyOnly is a remote server that does not know the federation media
// endpoints (404 M_UNRECOGNIZED) and serves the legacy ones, counting every
// request it gets.
type legacyOnly struct {
	name     string
	requests atomic.Int32
	data     []byte
	bytesURL string // where "redirected" media is served
	mu       sync.Mutex
	seen     []string
}

func (l *legacyOnly) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.requests.Add(1)
	l.mu.Lock()
	l.seen = append(l.seen, r.URL.Path+"?"+r.URL.RawQuery)
	l.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	prefix := "/_matrix/media/v3/"
	switch {
	case strings.HasPrefix(r.URL.Path, "/_matrix/federation/v1/media/"):
		w.WriteHeader(404)
		_, _ = io.WriteString(w, `{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`)
	case strings.HasPrefix(r.URL.Path, prefix) && r.URL.Query().Get("allow_remote") == "false":
		parts := strings.Split(strings.TrimPrefix(r.URL.Path, prefix), "/")
		if len(parts) != 3 || parts[1] != l.name {
			w.WriteHeader(404)
			_, _ = io.WriteString(w, `{"errcode":"M_NOT_FOUND","error":"no"}`)
			return
		}
		switch {
		case parts[2] == "redirected" && r.URL.Query().Get("allow_redirect") == "true":
			w.Header().Set("Location", l.bytesURL)
			w.WriteHeader(http.StatusTemporaryRedirect)
		case parts[2] == "plain" || parts[2] == "redirected" || parts[2] == "slow":
			if parts[2] == "slow" {
				time.Sleep(300 * time.Millisecond)
			}
			w.Header().Set("Content-Type", "application/pdf")
			w.Header().Set("Content-Disposition", `attachment; filename="old.pdf"`)
			_, _ = w.Write(l.data)
		default:
			w.WriteHeader(404)
			_, _ = io.WriteString(w, `{"errcode":"M_NOT_FOUND","error":"no"}`)
		}
	default:
		w.WriteHeader(400)
		_, _ = io.WriteString(w, `{"errcode":"M_UNKNOWN","error":"unexpected request"}`)
	}
}

// startTLS serves h over TLS on loopback and returns its server name.
func startTLS(t *testing.T, h http.Handler) string {
	ts := httptest.NewUnstartedServer(h)
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return ts.Listener.Addr().String()
}

func TestMediaFederationLegacyRemote(t *testing.T) {
	for _, eng := range []string{"embedded", "aws"} {
		t.Run(eng, func(t *testing.T) {
			testMediaFederationLegacyRemote(t, testenv.StartFederationOn(t, eng, 1, map[string]string{"CIRRUS_MEDIA_LEGACY_UNAUTHENTICATED": "true"})[0])
		})
	}
}

func testMediaFederationLegacyRemote(t *testing.T, b *testenv.FedServer) {
	bob := fedUser(t, b, "bob")
	data := []byte("%PDF-1.4 an old document")
	bytesSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/pdf")
		_, _ = w.Write(data)
	}))
	t.Cleanup(bytesSrv.Close)
	legacy := &legacyOnly{data: data, bytesURL: bytesSrv.URL + "/bytes"}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &httptest.Server{Listener: ln, Config: &http.Server{Handler: legacy}}
	legacy.name = ln.Addr().String()
	ts.StartTLS()
	t.Cleanup(ts.Close)

	for _, mediaID := range []string{"plain", "redirected"} {
		before := legacy.requests.Load()
		mxc := id.ContentURI{Homeserver: legacy.name, FileID: mediaID}
		r := mediaDo(t, b.HTTP, "GET", remoteDownload(b, mxc), bob.AccessToken, nil, nil)
		if r.status != 200 || !bytes.Equal(r.body, data) || r.header.Get("Content-Type") != "application/pdf" {
			t.Fatalf("%s from a legacy-only server: %d %q %v", mediaID, r.status, r.body, r.header)
		}
		if n := legacy.requests.Load() - before; n != 2 {
			t.Fatalf("%s: %d requests to the remote, want 2 (federation endpoint, then legacy): %v", mediaID, n, legacy.seen)
		}
		r = mediaDo(t, b.HTTP, "GET", remoteDownload(b, mxc), bob.AccessToken, nil, nil)
		if r.status != 200 || !bytes.Equal(r.body, data) {
			t.Fatalf("%s from the cache: %d", mediaID, r.status)
		}
		if n := legacy.requests.Load() - before; n != 2 {
			t.Fatalf("%s: the second download went remote (%d requests)", mediaID, n)
		}
	}
	// Concurrent first requests: the remote is asked once.
	before := legacy.requests.Load()
	var wg sync.WaitGroup
	results := make([]mediaResp, 8)
	for i := range results {
		wg.Go(func() {
			results[i] = mediaDo(t, b.HTTP, "GET", remoteDownload(b, id.ContentURI{Homeserver: legacy.name, FileID: "slow"}), bob.AccessToken, nil, nil)
		})
	}
	wg.Wait()
	for i, r := range results {
		if r.status != 200 || !bytes.Equal(r.body, data) {
			t.Fatalf("concurrent download %d: %d %s", i, r.status, r.body)
		}
	}
	if n := legacy.requests.Load() - before; n != 2 {
		t.Fatalf("%d requests to the remote for 8 concurrent first downloads, want 2: %v", n, legacy.seen)
	}
	if d := mediaDo(t, b.HTTP, "GET", remoteDownload(b, id.ContentURI{Homeserver: legacy.name, FileID: "plain"}), bob.AccessToken, nil, nil).header.Get("Content-Disposition"); d != `attachment; filename="old.pdf"` {
		t.Fatalf("file name from the legacy answer: %q", d)
	}
	// B's own legacy endpoint (enabled here) serves remote media too.
	before = legacy.requests.Load()
	r := mediaDo(t, b.HTTP, "GET", b.URL+"/_matrix/media/v3/download/"+legacy.name+"/fresh", "", nil, nil)
	if r.status != 404 || legacy.requests.Load()-before != 2 {
		t.Fatalf("legacy download of unknown remote media: %d, %d remote requests", r.status, legacy.requests.Load()-before)
	}
	r = mediaDo(t, b.HTTP, "GET", b.URL+"/_matrix/media/v3/download/"+legacy.name+"/plain", "", nil, nil)
	if r.status != 200 || !bytes.Equal(r.body, data) {
		t.Fatalf("legacy download of cached remote media: %d", r.status)
	}
	r = mediaDo(t, b.HTTP, "GET", remoteDownload(b, id.ContentURI{Homeserver: legacy.name, FileID: "missing"}), bob.AccessToken, nil, nil)
	if r.status != 404 || r.json["errcode"] != "M_NOT_FOUND" {
		t.Fatalf("missing legacy media: %d %s", r.status, r.body)
	}
}

func TestMediaFederationUnreachableAndSlow(t *testing.T) {
	b := testenv.StartFederation(t, 1, nil)[0]
	bob := fedUser(t, b, "bob")

	// Nothing listens on a closed port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	r := mediaDo(t, b.HTTP, "GET", remoteDownload(b, id.ContentURI{Homeserver: closed, FileID: "abc"}), bob.AccessToken, nil, nil)
	if r.status != 502 || r.json["errcode"] != "M_UNKNOWN" {
		t.Fatalf("unreachable remote: %d %s", r.status, r.body)
	}
	r = mediaDo(t, b.HTTP, "GET", remoteThumb(b, id.ContentURI{Homeserver: closed, FileID: "abc"}, 32, 32, "crop"), bob.AccessToken, nil, nil)
	if r.status != 502 || r.json["errcode"] != "M_UNKNOWN" {
		t.Fatalf("unreachable remote thumbnail: %d %s", r.status, r.body)
	}

	// A remote that does not answer within timeout_ms: 504.
	release := make(chan struct{})
	slow := startTLS(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release) })
	start := time.Now()
	r = mediaDo(t, b.HTTP, "GET", remoteDownload(b, id.ContentURI{Homeserver: slow, FileID: "abc"})+"?timeout_ms=400", bob.AccessToken, nil, nil)
	if r.status != 504 || r.json["errcode"] != "M_NOT_YET_UPLOADED" {
		t.Fatalf("slow remote: %d %s", r.status, r.body)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("timeout_ms=400 took %s", took)
	}
}

// lambdaFedServer starts a server on the lambda engine (each function built
// on its own over the DynamoDB, SQS and S3 stand-ins, reached through the
// API Gateway stand-in) and serves that same API over HTTPS on loopback
// under its server name, so other servers federate with it as with a
// deployment behind API Gateway.
func lambdaFedServer(t *testing.T) (string, *testenv.Env) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	name := "localhost:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	env := testenv.Start(t, "lambda", map[string]string{
		"CIRRUS_SERVER_NAME":                    name,
		"CIRRUS_FEDERATION_TLS_SKIP_VERIFY":     "true",
		"CIRRUS_FEDERATION_ALLOW_PRIVATE_ADDRS": "true",
		"CIRRUS_FEDERATION_REQUEST_TIMEOUT":     "20s",
		// What the Media function runs with in Lambda.
		"CIRRUS_MEDIA_DIRECT_LIMIT_BYTES": strconv.Itoa(media.LambdaPayloadLimit),
	})
	gw, err := url.Parse(env.URL)
	if err != nil {
		t.Fatal(err)
	}
	front := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(gw) }, Transport: env.HTTP.Transport}
	ts := &httptest.Server{Listener: ln, Config: &http.Server{Handler: front}}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return name, env
}

// Federation media with a Lambda deployment on either side: its Media
// function fetches another server's media over federation (small, and
// large enough to be cached in S3 and redirected), makes thumbnails from
// the cached original, and serves its own media to the other server.
func TestMediaFederationLambda(t *testing.T) {
	a := testenv.StartFederation(t, 1, nil)[0]
	bName, b := lambdaFedServer(t)
	alice := fedUser(t, a, "alice")
	bob := register(t, b, "bob", "pw")
	hc := mediaHTTP(b)
	thumb := func(mxc id.ContentURI, w, h int, method string) string {
		return fmt.Sprintf("%s/_matrix/client/v1/media/thumbnail/%s/%s?width=%d&height=%d&method=%s", b.URL, mxc.Homeserver, mxc.FileID, w, h, method)
	}
	download := func(mxc id.ContentURI) string {
		return b.URL + "/_matrix/client/v1/media/download/" + mxc.Homeserver + "/" + mxc.FileID
	}

	// A's media through B's Media function.
	pic := mediatest.PNG(400, 300)
	pmxc := fedUpload(t, a, alice.AccessToken, "image/png", "cat.png", pic)
	r := mediaDo(t, hc, "GET", download(pmxc), bob.AccessToken, nil, nil)
	if r.status != 200 || !bytes.Equal(r.body, pic) {
		t.Fatalf("remote download through the Media function: %d %.200s", r.status, r.body)
	}
	checkServingHeaders(t, r.header, "image/png", `inline; filename="cat.png"`)
	if img, _ := decodeImage(t, mediaDo(t, hc, "GET", thumb(pmxc, 30, 30, "crop"), bob.AccessToken, nil, nil)); img.Bounds().Size() != (image.Point{32, 32}) {
		t.Fatalf("remote thumbnail: %v", img.Bounds().Size())
	}
	// Over the Lambda payload limit: cached in S3, bob redirected there.
	big := randomBytes(media.LambdaPayloadLimit + 1<<20)
	bmxc := fedUpload(t, a, alice.AccessToken, "video/mp4", "clip.mp4", big)
	first := mediaDo(t, noRedirects(hc), "GET", download(bmxc), bob.AccessToken, nil, nil)
	if first.status != 307 || first.header.Get("Location") == "" {
		t.Fatalf("large remote media through the Media function: %d %q %.200s", first.status, first.header.Get("Location"), first.body)
	}
	if r := mediaDo(t, hc, "GET", download(bmxc), bob.AccessToken, nil, nil); r.status != 200 || !bytes.Equal(r.body, big) {
		t.Fatalf("following the redirect: %d, %d bytes", r.status, len(r.body))
	}

	// B's media through A: B's federation media endpoint is a Lambda too.
	doc := []byte("notes from the lambda side")
	r = mediaDo(t, hc, "POST", b.URL+"/_matrix/media/v3/upload?filename=notes.txt", bob.AccessToken, doc, map[string]string{"Content-Type": "text/plain"})
	if r.status != 200 {
		t.Fatalf("upload on B: %d %s", r.status, r.body)
	}
	dmxc, err := id.ParseContentURI(r.json["content_uri"].(string))
	if err != nil || dmxc.Homeserver != bName {
		t.Fatalf("content_uri %v: %v", r.json, err)
	}
	r = mediaDo(t, a.HTTP, "GET", remoteDownload(a, dmxc), alice.AccessToken, nil, nil)
	if r.status != 200 || !bytes.Equal(r.body, doc) {
		t.Fatalf("B's media through A: %d %.200s", r.status, r.body)
	}
	_, hdr, body := multipartMedia(t, fedMedia(t, a, bName, "download", dmxc.FileID, nil))
	if hdr["Content-Type"] != "text/plain" || !bytes.Equal(body, doc) {
		t.Fatalf("B's federation media endpoint: %v %q", hdr, body)
	}

	// A gone: cached media and new thumbnail sizes still work (made from
	// the cached original), uncached media does not.
	a.Stop()
	if r := mediaDo(t, hc, "GET", download(pmxc), bob.AccessToken, nil, nil); r.status != 200 || !bytes.Equal(r.body, pic) {
		t.Fatalf("cached remote media with A gone: %d", r.status)
	}
	for _, tc := range []struct {
		w, h   int
		method string
		want   image.Point
	}{{90, 90, "crop", image.Pt(96, 96)}, {300, 200, "scale", image.Pt(320, 240)}} {
		if img, _ := decodeImage(t, mediaDo(t, hc, "GET", thumb(pmxc, tc.w, tc.h, tc.method), bob.AccessToken, nil, nil)); img.Bounds().Size() != tc.want {
			t.Fatalf("%dx%d %s with A gone: %v, want %v", tc.w, tc.h, tc.method, img.Bounds().Size(), tc.want)
		}
	}
	r = mediaDo(t, hc, "GET", b.URL+"/_matrix/client/v1/media/download/"+a.Name+"/neverfetched", bob.AccessToken, nil, nil)
	if r.status != 502 || r.json["errcode"] != "M_UNKNOWN" {
		t.Fatalf("uncached media of a stopped server: %d %s", r.status, r.body)
	}
}
