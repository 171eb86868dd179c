// Package s3 adapts an S3 bucket to blob.Store with aws-sdk-go-v2.
//
// Put streams the body in a single PutObject request with a fixed
// Content-Length and an unsigned payload (no SDK-computed checksum), so the
// body is read once, never buffered and need not seek, over HTTPS and over
// plain-HTTP emulators alike. The body is checked against the declared size
// before its last byte is handed to the SDK: a short, long or failing body
// aborts the request before it completes, and S3 stores nothing for an
// incomplete PutObject. A single PutObject is limited to 5 GiB.
package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	sdk "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/cirrus-matrix/cirrus/core/blob"
)

// maxPresignTTL is the longest validity SigV4 presigned URLs allow.
const maxPresignTTL = 7 * 24 * time.Hour

// Store is a blob.Store on one S3 bucket. It is safe for concurrent use.
type Store struct {
	client     *sdk.Client
	presign    *sdk.PresignClient
	bucket     string
	clientOpts []func(*sdk.Options)

	puts, gets, heads, deletes, presignGets, presignPuts atomic.Int64
}

var _ blob.Store = (*Store)(nil)

// Option configures a Store.
type Option func(*Store)

// WithPathStyle addresses the bucket as http://host/bucket/key instead of
// http://bucket.host/key, as S3 emulators usually need.
func WithPathStyle() Option {
	return WithClientOptions(func(o *sdk.Options) { o.UsePathStyle = true })
}

// WithClientOptions applies fns to the client options of every call the
// store makes, presigning included.
func WithClientOptions(fns ...func(*sdk.Options)) Option {
	return func(s *Store) { s.clientOpts = append(s.clientOpts, fns...) }
}

// New returns a store for bucket, which must exist (see EnsureBucket).
func New(client *sdk.Client, bucket string, opts ...Option) *Store {
	s := &Store{client: client, bucket: bucket}
	for _, o := range opts {
		o(s)
	}
	s.presign = sdk.NewPresignClient(client, func(po *sdk.PresignOptions) {
		po.ClientOptions = append(po.ClientOptions, s.clientOpts...)
		po.ClientOptions = append(po.ClientOptions, noChecksums)
	})
	return s
}

// Stats counts the S3 operations a Store has issued, failed ones included.
// Presigning makes no request but is counted too.
type Stats struct {
	PutObject, GetObject, HeadObject, DeleteObject int64
	PresignGet, PresignPut                         int64
}

// Stats returns the operation counts so far.
func (s *Store) Stats() Stats {
	return Stats{
		PutObject:    s.puts.Load(),
		GetObject:    s.gets.Load(),
		HeadObject:   s.heads.Load(),
		DeleteObject: s.deletes.Load(),
		PresignGet:   s.presignGets.Load(),
		PresignPut:   s.presignPuts.Load(),
	}
}

// noChecksums stops the SDK computing request checksums unless an operation
// requires one. Together with an unsigned payload it lets PutObject stream a
// body that cannot seek: over plain HTTP (emulators) the SDK's defaults would
// hash the body first and fail with "request stream is not seekable". Over
// HTTPS the SDK already sends PutObject unsigned; TLS and the signed
// Content-Length guard the bytes. Presigned PUTs use it too, so no checksum
// is ever baked into a URL.
func noChecksums(o *sdk.Options) {
	o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
}

// quietChecksums stops the SDK logging, at every GetObject, that the
// response carried no checksum to validate.
func quietChecksums(o *sdk.Options) { o.DisableLogOutputChecksumValidationSkipped = true }

// Put uploads exactly size bytes from r under key.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("s3: negative size %d", size)
	}
	body := &exactReader{ctx: ctx, r: r, remaining: size}
	in := &sdk.PutObjectInput{
		Bucket:        &s.bucket,
		Key:           &key,
		ContentLength: aws.Int64(size),
	}
	if contentType != "" {
		in.ContentType = &contentType
	}
	if size == 0 {
		// The SDK sends no body for a zero length, so nothing would read
		// r: check it is empty here.
		if _, err := body.Read(nil); err != nil && !errors.Is(err, io.EOF) {
			return body.failure(key)
		}
	} else {
		in.Body = body
	}
	opts := append([]func(*sdk.Options){
		noChecksums,
		sdk.WithAPIOptions(v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware),
	}, s.clientOpts...)
	s.puts.Add(1)
	_, err := s.client.PutObject(ctx, in, opts...)
	if body.failed() != nil {
		return body.failure(key)
	}
	if err != nil {
		return fmt.Errorf("s3: put %q: %w", key, err)
	}
	return nil
}

// exactReader passes through exactly remaining bytes of r. It checks r is at
// EOF before returning the final bytes, so a too-long body fails while the
// request is still incomplete. It also fails once ctx is done.
type exactReader struct {
	ctx       context.Context
	r         io.Reader
	remaining int64

	// The transport may still be reading when PutObject returns, so the
	// sticky first failure is shared under a lock.
	mu  sync.Mutex
	err error
}

func (e *exactReader) fail(err error) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err == nil {
		e.err = err
	}
	return 0, e.err
}

func (e *exactReader) failed() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

func (e *exactReader) failure(key string) error {
	return fmt.Errorf("s3: put %q: %w", key, e.failed())
}

func (e *exactReader) Read(p []byte) (int, error) {
	if err := e.failed(); err != nil {
		return 0, err
	}
	if err := e.ctx.Err(); err != nil {
		return e.fail(err)
	}
	if e.remaining == 0 {
		// Everything has been delivered; confirm r has no more.
		var one [1]byte
		for {
			n, err := e.r.Read(one[:])
			if n > 0 {
				return e.fail(fmt.Errorf("%w: body is longer than declared", blob.ErrShortBody))
			}
			if errors.Is(err, io.EOF) {
				return 0, io.EOF
			}
			if err != nil {
				return e.fail(err)
			}
		}
	}
	if int64(len(p)) > e.remaining {
		p = p[:e.remaining]
	}
	n, err := e.r.Read(p)
	e.remaining -= int64(n)
	switch {
	case e.remaining == 0:
		// Hold the final bytes back until r is known to end here.
		if err == nil || errors.Is(err, io.EOF) {
			if _, err := e.Read(nil); !errors.Is(err, io.EOF) {
				return 0, err
			}
			return n, io.EOF
		}
		return e.fail(err)
	case errors.Is(err, io.EOF):
		return e.fail(fmt.Errorf("%w: body ended %d bytes short", blob.ErrShortBody, e.remaining))
	case err != nil:
		return e.fail(err)
	}
	return n, nil
}

// Get opens the object; the caller closes the body.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, blob.Info, error) {
	if err := checkKey(key); err != nil {
		return nil, blob.Info{}, err
	}
	s.gets.Add(1)
	// Objects are stored without checksums (see Put), so there is none to
	// validate; without this the SDK logs that at every read.
	opts := append([]func(*sdk.Options){quietChecksums}, s.clientOpts...)
	out, err := s.client.GetObject(ctx, &sdk.GetObjectInput{Bucket: &s.bucket, Key: &key}, opts...)
	if err != nil {
		return nil, blob.Info{}, mapErr("get", key, err)
	}
	return out.Body, blob.Info{Size: aws.ToInt64(out.ContentLength), ContentType: aws.ToString(out.ContentType)}, nil
}

// Head returns the object's size and content type.
func (s *Store) Head(ctx context.Context, key string) (blob.Info, error) {
	if err := checkKey(key); err != nil {
		return blob.Info{}, err
	}
	s.heads.Add(1)
	out, err := s.client.HeadObject(ctx, &sdk.HeadObjectInput{Bucket: &s.bucket, Key: &key}, s.clientOpts...)
	if err != nil {
		return blob.Info{}, mapErr("head", key, err)
	}
	return blob.Info{Size: aws.ToInt64(out.ContentLength), ContentType: aws.ToString(out.ContentType)}, nil
}

// Delete removes the object; S3 treats a missing key as deleted.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	s.deletes.Add(1)
	if _, err := s.client.DeleteObject(ctx, &sdk.DeleteObjectInput{Bucket: &s.bucket, Key: &key}, s.clientOpts...); err != nil {
		return mapErr("delete", key, err)
	}
	return nil
}

// PresignGet returns a URL that serves the object for ttl (at most 7 days).
func (s *Store) PresignGet(ctx context.Context, key string, ttl time.Duration) (string, error) {
	if err := checkKey(key); err != nil {
		return "", err
	}
	if err := checkTTL(ttl); err != nil {
		return "", err
	}
	s.presignGets.Add(1)
	req, err := s.presign.PresignGetObject(ctx, &sdk.GetObjectInput{Bucket: &s.bucket, Key: &key}, sdk.WithPresignExpires(ttl))
	if err != nil {
		return "", fmt.Errorf("s3: presign get %q: %w", key, err)
	}
	return req.URL, nil
}

// PresignGetAs is PresignGet with the answer's Content-Type,
// Content-Disposition and Cache-Control fixed by the URL (S3's response-*
// parameters, which are signed): media downloads redirected to S3 keep the
// headers Cirrus would have sent, whatever the object itself was stored with.
// Empty values leave that header alone.
func (s *Store) PresignGetAs(ctx context.Context, key string, ttl time.Duration, contentType, contentDisposition, cacheControl string) (string, error) {
	if err := checkKey(key); err != nil {
		return "", err
	}
	if err := checkTTL(ttl); err != nil {
		return "", err
	}
	in := &sdk.GetObjectInput{Bucket: &s.bucket, Key: &key}
	if contentType != "" {
		in.ResponseContentType = &contentType
	}
	if contentDisposition != "" {
		in.ResponseContentDisposition = &contentDisposition
	}
	if cacheControl != "" {
		in.ResponseCacheControl = &cacheControl
	}
	s.presignGets.Add(1)
	req, err := s.presign.PresignGetObject(ctx, in, sdk.WithPresignExpires(ttl))
	if err != nil {
		return "", fmt.Errorf("s3: presign get %q: %w", key, err)
	}
	return req.URL, nil
}

// PresignPut returns a URL that accepts, for ttl (at most 7 days), a PUT of
// exactly size bytes with Content-Type contentType: both headers are signed,
// so S3 rejects any other length or type. A negative size (or an empty
// type) leaves that header unsigned: any length (up to S3's 5 GB) is taken.
func (s *Store) PresignPut(ctx context.Context, key string, size int64, contentType string, ttl time.Duration) (string, error) {
	if err := checkKey(key); err != nil {
		return "", err
	}
	if err := checkTTL(ttl); err != nil {
		return "", err
	}
	in := &sdk.PutObjectInput{Bucket: &s.bucket, Key: &key}
	if size >= 0 {
		in.ContentLength = aws.Int64(size)
	}
	if contentType != "" {
		in.ContentType = &contentType
	}
	s.presignPuts.Add(1)
	req, err := s.presign.PresignPutObject(ctx, in, sdk.WithPresignExpires(ttl))
	if err != nil {
		return "", fmt.Errorf("s3: presign put %q: %w", key, err)
	}
	return req.URL, nil
}

func checkTTL(ttl time.Duration) error {
	if ttl <= 0 || ttl > maxPresignTTL {
		return fmt.Errorf("s3: presign ttl %v outside (0, %v]", ttl, maxPresignTTL)
	}
	return nil
}

// mapErr turns S3's missing-object errors into blob.ErrNotFound. HeadObject
// has no error body, so its 404 arrives as the code "NotFound".
func mapErr(op, key string, err error) error {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	var api smithy.APIError
	if errors.As(err, &nsk) || errors.As(err, &nf) ||
		errors.As(err, &api) && (api.ErrorCode() == "NoSuchKey" || api.ErrorCode() == "NotFound") {
		return fmt.Errorf("%w: %q", blob.ErrNotFound, key)
	}
	return fmt.Errorf("s3: %s %q: %w", op, key, err)
}

// EnsureBucket creates bucket name unless it already exists and is
// reachable, for local setups and tests. optFns apply to each call (for
// example path-style addressing).
func EnsureBucket(ctx context.Context, client *sdk.Client, name string, optFns ...func(*sdk.Options)) error {
	if _, err := client.HeadBucket(ctx, &sdk.HeadBucketInput{Bucket: &name}, optFns...); err == nil {
		return nil
	}
	in := &sdk.CreateBucketInput{Bucket: &name}
	if region := client.Options().Region; region != "" && region != "us-east-1" {
		in.CreateBucketConfiguration = &types.CreateBucketConfiguration{
			LocationConstraint: types.BucketLocationConstraint(region),
		}
	}
	_, err := client.CreateBucket(ctx, in, optFns...)
	if err == nil {
		return nil
	}
	var owned *types.BucketAlreadyOwnedByYou
	var exists *types.BucketAlreadyExists
	if errors.As(err, &owned) {
		return nil
	}
	if errors.As(err, &exists) {
		// Emulators answer this for a bucket of ours; real S3 means it belongs
		// to someone else, which HeadBucket then refuses.
		if _, herr := client.HeadBucket(ctx, &sdk.HeadBucketInput{Bucket: &name}, optFns...); herr == nil {
			return nil
		}
	}
	return fmt.Errorf("s3: create bucket %q: %w", name, err)
}

// checkKey is blob.CheckKey (the port's shared key syntax).
func checkKey(key string) error { return blob.CheckKey(key) }
