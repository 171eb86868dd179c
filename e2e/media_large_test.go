package e2e

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

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
