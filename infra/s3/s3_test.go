package s3

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	sdk "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/cirrus-matrix/cirrus/core/blob"
	"github.com/cirrus-matrix/cirrus/core/blob/blobtest"
)

// fakeS3 starts an in-process gofakes3 with the memory backend and returns a
// client for it. The client itself uses virtual-host addressing, so the
// store must be given WithPathStyle to reach it.
func fakeS3(t *testing.T) *sdk.Client {
	t.Helper()
	srv := httptest.NewServer(gofakes3.New(s3mem.New(), gofakes3.WithLogger(gofakes3.DiscardLog())).Server())
	t.Cleanup(srv.Close)
	return sdk.New(sdk.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(srv.URL),
		Credentials:  credentials.NewStaticCredentialsProvider("test", "test", ""),
	})
}

var bucketSeq atomic.Int64

func newStore(t *testing.T, client *sdk.Client) *Store {
	t.Helper()
	bucket := fmt.Sprintf("cirrus-test-%d", bucketSeq.Add(1))
	if err := EnsureBucket(t.Context(), client, bucket, pathStyle); err != nil {
		t.Fatalf("EnsureBucket: %v", err)
	}
	return New(client, bucket, WithPathStyle())
}

func pathStyle(o *sdk.Options) { o.UsePathStyle = true }

func TestContract(t *testing.T) {
	client := fakeS3(t)
	blobtest.Run(t, func(t *testing.T) blob.Store { return newStore(t, client) })
}

func TestEnsureBucketIdempotent(t *testing.T) {
	client := fakeS3(t)
	for range 2 {
		if err := EnsureBucket(t.Context(), client, "twice", pathStyle); err != nil {
			t.Fatalf("EnsureBucket: %v", err)
		}
	}
}

func TestMissingBucketIsNotNotFound(t *testing.T) {
	s := New(fakeS3(t), "no-such-bucket", WithPathStyle())
	if _, _, err := s.Get(t.Context(), "k"); err == nil || strings.Contains(err.Error(), blob.ErrNotFound.Error()) {
		t.Fatalf("Get from a missing bucket: %v, want an error other than not found", err)
	}
	if err := s.Put(t.Context(), "k", strings.NewReader("x"), 1, "text/plain"); err == nil {
		t.Fatal("Put to a missing bucket succeeded")
	}
}

func TestStats(t *testing.T) {
	s := newStore(t, fakeS3(t))
	ctx := t.Context()
	if err := s.Put(ctx, "a", strings.NewReader("x"), 1, "text/plain"); err != nil {
		t.Fatal(err)
	}
	rc, _, err := s.Get(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	s.Get(ctx, "missing")
	s.Head(ctx, "a")
	s.Delete(ctx, "a")
	s.PresignGet(ctx, "a", time.Minute)
	s.PresignPut(ctx, "a", 1, "text/plain", time.Minute)
	// Invalid keys and short bodies found before sending make no request.
	s.Put(ctx, "../x", strings.NewReader("x"), 1, "")
	s.Put(ctx, "z", strings.NewReader("xx"), 0, "")
	want := Stats{PutObject: 1, GetObject: 2, HeadObject: 1, DeleteObject: 1, PresignGet: 1, PresignPut: 1}
	if got := s.Stats(); got != want {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
}

func TestPresignURLs(t *testing.T) {
	s := newStore(t, fakeS3(t))
	ctx := t.Context()
	cases := []struct {
		name       string
		presign    func() (string, error)
		wantSigned []string
		wantPath   string
	}{
		{"put", func() (string, error) { return s.PresignPut(ctx, "m/k", 42, "image/png", 10*time.Minute) },
			[]string{"content-length", "content-type", "host"}, "/" + s.bucket + "/m/k"},
		// MSC3870 upload URLs (core/media/upload_url.go): any length and
		// type, so a browser's PUT needs no header the bucket's CORS rule
		// would have to allow beyond its own Content-Type.
		{"put of any length", func() (string, error) { return s.PresignPut(ctx, "incoming/abc", -1, "", 10*time.Minute) },
			[]string{"host"}, "/" + s.bucket + "/incoming/abc"},
		{"get", func() (string, error) { return s.PresignGet(ctx, "m/k", 10*time.Minute) },
			[]string{"host"}, "/" + s.bucket + "/m/k"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := tc.presign()
			if err != nil {
				t.Fatal(err)
			}
			u, err := url.Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			if u.Path != tc.wantPath {
				t.Errorf("path %q, want %q (path-style)", u.Path, tc.wantPath)
			}
			q := u.Query()
			if got := q.Get("X-Amz-Expires"); got != "600" {
				t.Errorf("X-Amz-Expires = %q, want 600", got)
			}
			if got, want := q.Get("X-Amz-SignedHeaders"), strings.Join(tc.wantSigned, ";"); got != want {
				t.Errorf("X-Amz-SignedHeaders = %q, want %q", got, want)
			}
			for k := range q {
				if strings.HasPrefix(strings.ToLower(k), "x-amz-checksum") || strings.HasPrefix(strings.ToLower(k), "x-amz-sdk-checksum") {
					t.Errorf("presigned URL carries %s=%s", k, q.Get(k))
				}
			}
		})
	}
	for _, ttl := range []time.Duration{0, -time.Second, 8 * 24 * time.Hour} {
		if _, err := s.PresignGet(ctx, "k", ttl); err == nil {
			t.Errorf("PresignGet with ttl %v succeeded", ttl)
		}
	}
}

func TestPutHonoursContextBeforeSending(t *testing.T) {
	s := newStore(t, fakeS3(t))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Put(ctx, "k", strings.NewReader("abc"), 3, "text/plain"); err == nil {
		t.Fatal("Put with a cancelled context succeeded")
	}
}

// A presigned GET made with PresignGetAs answers with the headers it names,
// not the ones the object was stored with.
func TestPresignGetAs(t *testing.T) {
	s := newStore(t, fakeS3(t))
	ctx := t.Context()
	if err := s.Put(ctx, "m/k", strings.NewReader("<html>"), 6, "text/html"); err != nil {
		t.Fatal(err)
	}
	u, err := s.PresignGetAs(ctx, "m/k", time.Minute, "application/octet-stream", `attachment; filename="a b.html"`, "private, max-age=60")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "<html>" {
		t.Fatalf("GET presigned: %d %q", resp.StatusCode, body)
	}
	for k, want := range map[string]string{"Content-Type": "application/octet-stream", "Content-Disposition": `attachment; filename="a b.html"`, "Cache-Control": "private, max-age=60"} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if _, err := s.PresignGetAs(ctx, "../x", time.Minute, "", "", ""); err == nil {
		t.Fatal("bad key accepted")
	}
}
