package e2e

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/media"
	"github.com/cirrus-matrix/cirrus/infra/app"
	"github.com/cirrus-matrix/cirrus/infra/config"
	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

// Media larger than a Lambda answer crosses federation as a Location part
// (on S3) and reaches bob as a 307 to B's own presigned URL.
func TestMediaLargeFederation(t *testing.T) {
	mediaFedEngines(t, 2, func(t *testing.T, srv []*testenv.FedServer) {
		a, b := srv[0], srv[1]
		onS3 := a.Vars["CIRRUS_STORAGE"] == "aws"
		alice := fedUser(t, a, "alice")
		bob := fedUser(t, b, "bob")
		data := randomBytes(5<<20 + 11)
		mxc := fedUpload(t, a, alice.AccessToken, "video/mp4", "clip.mp4", data)

		// What A answers another server.
		_, hdr, body := multipartMedia(t, fedMedia(t, b, a.Name, "download", mxc.FileID, nil))
		if onS3 {
			loc := hdr["Location"]
			if loc == "" || len(body) != 0 {
				t.Fatalf("large federation download on S3: Location %q, %d body bytes", loc, len(body))
			}
			r := mediaDo(t, http.DefaultClient, "GET", loc, "", nil, nil)
			if r.status != 200 || !bytes.Equal(r.body, data) || r.header.Get("Content-Type") != "video/mp4" ||
				r.header.Get("Content-Disposition") != `inline; filename="clip.mp4"` {
				t.Fatalf("the Location: %d, %d bytes, %v", r.status, len(r.body), r.header)
			}
		} else if hdr["Location"] != "" || !bytes.Equal(body, data) {
			t.Fatalf("large federation download on the embedded store: Location %q, %d bytes", hdr["Location"], len(body))
		}

		// Bob through B: B follows the Location, caches, and redirects bob
		// to its own bucket.
		u := remoteDownload(b, mxc)
		first := mediaDo(t, noRedirects(b.HTTP), "GET", u, bob.AccessToken, nil, nil)
		if onS3 {
			loc := first.header.Get("Location")
			if first.status != 307 || loc == "" || strings.HasPrefix(loc, b.URL) {
				t.Fatalf("large remote download on S3: %d %q %.200s", first.status, loc, first.body)
			}
			r := mediaDo(t, http.DefaultClient, "GET", loc, "", nil, nil)
			if r.status != 200 || !bytes.Equal(r.body, data) || r.header.Get("Content-Type") != "video/mp4" {
				t.Fatalf("following B's redirect: %d, %d bytes, %v", r.status, len(r.body), r.header)
			}
		} else if first.status != 200 || !bytes.Equal(first.body, data) {
			t.Fatalf("large remote download on the embedded store: %d, %d bytes", first.status, len(first.body))
		}
	})
}

// MSC3870: /create hands out a presigned PUT URL where the blob store can
// make one; the bytes go straight to S3 (never through a Lambda function)
// and /complete takes them in with the usual checks.
func TestMediaUploadURL(t *testing.T) {
	forEachEngineWith(t, map[string]string{"CIRRUS_MEDIA_UPLOAD_URLS": "true", "CIRRUS_MAX_UPLOAD_BYTES": "8388608",
		"CIRRUS_MEDIA_DIRECT_LIMIT_BYTES": "4194304"}, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := mediaClient(env, register(t, env, "alice", "pw"))
		bob := mediaClient(env, register(t, env, "bob", "pw"))
		alice.ExternalClient = http.DefaultClient
		created, err := alice.CreateMXC(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if env.Vars["CIRRUS_STORAGE"] != "aws" {
			// A directory cannot presign: clients upload as usual.
			if created.UnstableUploadURL != "" {
				t.Fatalf("upload URL on the embedded store: %q", created.UnstableUploadURL)
			}
			return
		}
		if created.UnstableUploadURL == "" || strings.HasPrefix(created.UnstableUploadURL, env.URL) {
			t.Fatalf("no upload URL off the server: %+v", created)
		}
		complete := func(c *mautrix.Client, mxc id.ContentURI) error {
			u := c.BuildURLWithQuery(mautrix.MediaURLPath{"unstable", "com.beeper.msc3870", "upload", mxc.Homeserver, mxc.FileID, "complete"}, map[string]string{"filename": "big.webm"})
			_, err := c.MakeRequest(ctx, http.MethodPost, u, nil, nil)
			return err
		}
		// Nothing uploaded yet.
		if err := complete(alice, created.ContentURI); status(err) != 400 || errcode(err) != "M_UNKNOWN" {
			t.Fatalf("complete before the upload: %v", err)
		}

		// 6 MiB: more than a Lambda request can carry.
		data := randomBytes(6<<20 + 5)
		resp, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: data, ContentType: "video/webm", FileName: "big.webm",
			MXC: created.ContentURI, UnstableUploadURL: created.UnstableUploadURL})
		if err != nil {
			t.Fatalf("upload through the upload URL: %v", err)
		}
		if resp.ContentURI != created.ContentURI {
			t.Fatalf("content_uri %v, want %v", resp.ContentURI, created.ContentURI)
		}
		r := mediaDo(t, mediaHTTP(env), "GET", env.URL+downloadPath(created.ContentURI), bob.AccessToken, nil, nil)
		if r.status != 200 || !bytes.Equal(r.body, data) || r.header.Get("Content-Type") != "video/webm" ||
			r.header.Get("Content-Disposition") != `inline; filename="big.webm"` {
			t.Fatalf("download of the direct upload: %d, %d bytes, %v", r.status, len(r.body), r.header)
		}
		if err := complete(alice, created.ContentURI); status(err) != 409 || errcode(err) != "M_CANNOT_OVERWRITE_MEDIA" {
			t.Fatalf("second complete: %v", err)
		}

		// Someone else's reservation; then one over the size limit.
		other, err := alice.CreateMXC(ctx)
		if err != nil {
			t.Fatal(err)
		}
		put := func(u string, body []byte) {
			req, _ := http.NewRequest(http.MethodPut, u, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/octet-stream")
			res, err := http.DefaultClient.Do(req)
			if err != nil || res.StatusCode != 200 {
				t.Fatalf("PUT to the upload URL: %v %v", err, res)
			}
			res.Body.Close()
		}
		put(other.UnstableUploadURL, randomBytes(9<<20))
		if err := complete(bob, other.ContentURI); status(err) != 403 || errcode(err) != "M_FORBIDDEN" {
			t.Fatalf("completing another user's upload: %v", err)
		}
		if err := complete(alice, other.ContentURI); status(err) != 413 || errcode(err) != "M_TOO_LARGE" {
			t.Fatalf("completing an oversized upload: %v", err)
		}
		// The oversized object is gone: completing again finds nothing.
		if err := complete(alice, other.ContentURI); status(err) != 400 {
			t.Fatalf("complete after the oversized object was deleted: %v", err)
		}
		// Invalid addresses.
		if err := complete(alice, id.ContentURI{Homeserver: "cirrus.test", FileID: "bad%20id"}); status(err) != 400 {
			t.Fatalf("invalid media id: %v", err)
		}
	})
}

// uploadFront stands in for API Gateway with MediaUploadOrigin set: the
// two upload routes go to the origin, everything else to the functions.
type uploadFront struct {
	origin, functions http.Handler
	toOrigin          *atomic.Int32
}

func (f uploadFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if r.Method == http.MethodPost && p == "/_matrix/media/v3/upload" ||
		r.Method == http.MethodPut && strings.HasPrefix(p, "/_matrix/media/v3/upload/") && strings.Count(p, "/") == 6 {
		f.toOrigin.Add(1)
		f.origin.ServeHTTP(w, r)
		return
	}
	f.functions.ServeHTTP(w, r)
}

// A Lambda deployment with an upload origin: an all-in-one process on the
// same table, bucket and queues takes the upload routes, so standard
// uploads above the Lambda limit work; /config says how much. Without the
// origin, /config keeps to the Lambda limit even with MSC3870 upload URLs
// on (standard clients cannot use them).
func TestMediaUploadOrigin(t *testing.T) {
	ctx := context.Background()
	lambdaVars := map[string]string{"CIRRUS_MEDIA_DIRECT_LIMIT_BYTES": strconv.Itoa(media.LambdaPayloadLimit), "CIRRUS_MEDIA_UPLOAD_URLS": "true"}
	plain := testenv.Start(t, "lambda", lambdaVars)
	alice := register(t, plain, "alice", "pw")
	r := mediaDo(t, plain.HTTP, "GET", plain.URL+"/_matrix/client/v1/media/config", alice.AccessToken, nil, nil)
	if r.json["m.upload.size"] != float64(media.LambdaPayloadLimit) {
		t.Fatalf("config on Lambda with upload URLs: %s", r.body)
	}

	// The origin: an all-in-one on the same resources, without the Lambda
	// limit (built here so it shares the S3 stand-in of the functions).
	lambdaVars["CIRRUS_MEDIA_UPLOAD_ORIGIN"] = "https://upload.cirrus.test"
	fns := testenv.Start(t, "lambda", lambdaVars)
	originVars := maps.Clone(fns.Vars)
	delete(originVars, "CIRRUS_MEDIA_DIRECT_LIMIT_BYTES")
	delete(originVars, "CIRRUS_MEDIA_UPLOAD_ORIGIN")
	cfg, err := config.Load(func(k string) string { return originVars[k] })
	if err != nil {
		t.Fatal(err)
	}
	origin, err := app.Build(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { origin.Close() })
	gw, _ := url.Parse(fns.URL)
	var toOrigin atomic.Int32
	front := httptest.NewServer(uploadFront{
		toOrigin:  &toOrigin,
		origin:    origin.Server.Handler(),
		functions: &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(gw) }, Transport: fns.HTTP.Transport},
	})
	t.Cleanup(front.Close)
	env := &testenv.Env{URL: front.URL, HTTP: front.Client(), Vars: fns.Vars}
	bob := register(t, env, "bob", "pw")
	hc := mediaHTTP(env)

	r = mediaDo(t, hc, "GET", env.URL+"/_matrix/client/v1/media/config", bob.AccessToken, nil, nil)
	if r.json["m.upload.size"] != float64(media.ProxiedUploadLimit) {
		t.Fatalf("config with an upload origin: %s", r.body)
	}
	// 6 MiB: more than a Lambda request carries, less than API Gateway's 10 MB.
	data := randomBytes(6<<20 + 3)
	mxc := uploadMXC(t, env, bob.AccessToken, "video/mp4", "clip.mp4", data)
	r = mediaDo(t, hc, "GET", env.URL+downloadPath(mxc), bob.AccessToken, nil, nil)
	if r.status != 200 || !bytes.Equal(r.body, data) {
		t.Fatalf("download (Media function, redirected to S3) of the origin's upload: %d, %d bytes", r.status, len(r.body))
	}
	// Async: /create on the Media function, the bytes to the origin.
	bc := mediaClient(env, bob)
	created, err := bc.CreateMXC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data2 := randomBytes(5<<20 + 1)
	r = mediaDo(t, hc, "PUT", env.URL+"/_matrix/media/v3/upload/"+created.ContentURI.Homeserver+"/"+created.ContentURI.FileID+"?filename=b.bin", bob.AccessToken, data2,
		map[string]string{"Content-Type": "application/octet-stream"})
	if r.status != 200 {
		t.Fatalf("async upload through the origin: %d %s", r.status, r.body)
	}
	r = mediaDo(t, hc, "GET", env.URL+downloadPath(created.ContentURI), bob.AccessToken, nil, nil)
	if r.status != 200 || !bytes.Equal(r.body, data2) {
		t.Fatalf("download of the async upload: %d, %d bytes", r.status, len(r.body))
	}
	if n := toOrigin.Load(); n != 2 {
		t.Fatalf("%d requests reached the origin, want the 2 uploads", n)
	}
}
