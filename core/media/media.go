// Package media is the content repository: direct and asynchronous uploads,
// metadata in the table, bytes in the blob store, thumbnails made on demand
// and cached, and URL previews.
//
// Storage layout:
//
//   - table item media#<server>/<mediaId> | meta: the Record (state, content
//     type, file name, size, SHA-256, uploader, image facts). An async
//     upload's reservation is a "pending" record with a TTL at its
//     unused_expires_at and an index entry (mediapending#<user>) so a user's
//     open reservations can be counted.
//   - blob content/<sha256>: the bytes, shared by every upload of the same
//     content (dedup by hash). A blob is written completely before any record
//     points at it, so nothing half-written is ever served.
//   - blob thumb/<sha256>/<method>-<w>x<h>[-animated]: cached thumbnails.
//     They derive from the bytes alone, so identical uploads share them too.
//
// Media of other servers is fetched through a Fetcher (federation, see
// remote.go and fedfetch.go) and cached here under the remote server's name.
package media

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/blob"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Defaults for Config fields left zero.
const (
	DefaultMaxUploadBytes   = 50 << 20
	DefaultRedirectAbove    = 4 << 20
	DefaultMaxThumbPixels   = 50_000_000
	DefaultUnusedExpiry     = 24 * time.Hour
	DefaultMaxPending       = 10
	DefaultDownloadWait     = 20 * time.Second
	MaxDownloadWait         = 20 * time.Second
	DefaultPreviewCacheTime = time.Hour
	// LambdaPayloadLimit is the most media bytes Cirrus lets one request or
	// response carry through a Lambda function: a synchronous invocation's
	// event and answer are each limited to 6 MB, API Gateway base64-encodes
	// binary bodies (4/3 larger) and the headers take some room too.
	LambdaPayloadLimit = 4 << 20
	// ProxiedUploadLimit is the most an upload can carry when API Gateway
	// passes it to an upload origin (UploadOrigin) with its HTTP proxy:
	// an HTTP API refuses bodies over 10 MB (a quota that cannot be
	// raised), whichever way a megabyte is counted this is below it.
	ProxiedUploadLimit = 9<<20 + 512<<10
)

// Config is the content repository's settings.
type Config struct {
	// ServerName is this server's name: media ids under it are local.
	ServerName string
	// MaxUploadBytes is the largest upload accepted (413 M_TOO_LARGE above).
	MaxUploadBytes int64
	// RedirectAbove: downloads larger than this answer 307 with a presigned
	// URL of the blob store, when the store can make one that also fixes
	// the response's content type and disposition (S3). 0 never redirects.
	RedirectAbove int64
	// DirectLimit is the most bytes one request or response may carry
	// through this process: LambdaPayloadLimit in a Lambda function, 0
	// (no limit) elsewhere. Uploads above it cannot arrive at all (API
	// Gateway/Lambda refuse them before Cirrus sees them), so /config
	// advertises it; downloads above it that may not be redirected answer
	// 502 M_TOO_LARGE.
	DirectLimit int64
	// LegacyUnauthenticated keeps the deprecated unauthenticated
	// /_matrix/media/v3/download and /thumbnail endpoints working for new
	// uploads. Off (the default), they are "frozen" as the spec recommends:
	// only media uploaded while the setting was on stays reachable there.
	LegacyUnauthenticated bool
	// MaxThumbnailPixels bounds the images Cirrus decodes (width × height)
	// to make thumbnails: larger ones get 413 M_TOO_LARGE.
	MaxThumbnailPixels int64
	// UnusedExpiry is how long an mxc:// URI from /create waits for its bytes.
	UnusedExpiry time.Duration
	// MaxPendingUploads is how many unexpired, unused /create URIs one user
	// may hold (429 M_LIMIT_EXCEEDED beyond).
	MaxPendingUploads int
	// TempDir holds uploads while they arrive ("" = the system's).
	TempDir string
	// PreviewAllowPrivate lets URL previews reach private, loopback and
	// link-local addresses. For tests only: it disables the SSRF guard.
	PreviewAllowPrivate bool
	// PreviewCacheTime is how long a fetched preview is reused.
	PreviewCacheTime time.Duration
	// UploadURLs offers MSC3870 upload URLs with /create: a presigned PUT
	// straight to the blob store, so uploads larger than a Lambda request
	// can carry still arrive (see upload_url.go). Needs a store that can
	// presign (S3).
	UploadURLs bool
	// UploadOrigin is the all-in-one server that API Gateway sends the
	// upload routes to instead of this (Lambda) process (the template's
	// MediaUploadOrigin; "" when uploads come here). Uploads then never
	// pass through this process, so they are bounded by the proxy
	// (ProxiedUploadLimit) instead of DirectLimit.
	UploadOrigin string
}

func (c *Config) setDefaults() {
	if c.MaxUploadBytes <= 0 {
		c.MaxUploadBytes = DefaultMaxUploadBytes
	}
	if c.MaxThumbnailPixels <= 0 {
		c.MaxThumbnailPixels = DefaultMaxThumbPixels
	}
	if c.UnusedExpiry <= 0 {
		c.UnusedExpiry = DefaultUnusedExpiry
	}
	if c.MaxPendingUploads <= 0 {
		c.MaxPendingUploads = DefaultMaxPending
	}
	if c.PreviewCacheTime <= 0 {
		c.PreviewCacheTime = DefaultPreviewCacheTime
	}
}

// UploadLimit is the largest upload a standard client can make here, which
// /config advertises as m.upload.size: the configured maximum, or less when
// the way uploads arrive cannot carry it.
//
//   - Uploads routed to an upload origin pass API Gateway's HTTP proxy, so
//     they are bounded by its payload quota (ProxiedUploadLimit).
//   - Otherwise, uploads through a Lambda function are bounded by its
//     payload limit (DirectLimit): a larger request is refused by API
//     Gateway/Lambda before Cirrus runs, with a bare 413 no client
//     understands, so advertising more would only turn a clear "file too
//     large" in the client into a failed upload.
//   - MSC3870 upload URLs (UploadURLs) raise nothing here: only clients
//     that speak MSC3870 use them, m.upload.size is read by every client,
//     and MSC3870 defines no limit of its own. Its uploads are bounded by
//     MaxUploadBytes (checked at /complete).
func (c Config) UploadLimit() int64 {
	transport := c.DirectLimit
	if c.UploadOrigin != "" {
		transport = ProxiedUploadLimit
	}
	if transport > 0 && transport < c.MaxUploadBytes {
		return transport
	}
	return c.MaxUploadBytes
}

// HeaderPresigner is implemented by blob stores whose presigned GET URLs can
// set the answer's Content-Type, Content-Disposition and Cache-Control (S3's
// response-* parameters). Only those are used for redirects: a shared
// (deduplicated) blob's own content type may be another upload's.
type HeaderPresigner interface {
	PresignGetAs(ctx context.Context, key string, ttl time.Duration, contentType, contentDisposition, cacheControl string) (string, error)
}

// Service is the content repository.
type Service struct {
	cfg     Config
	t       table.Table
	blobs   blob.Store
	log     *slog.Logger
	now     func() time.Time
	preview *previewer
	fetcher Fetcher
}

// New builds the service. blobs may be nil only in tests that never touch media.
func New(cfg Config, t table.Table, blobs blob.Store, log *slog.Logger, now func() time.Time) *Service {
	cfg.setDefaults()
	if log == nil {
		log = slog.Default()
	}
	if now == nil {
		now = time.Now
	}
	s := &Service{cfg: cfg, t: t, blobs: blobs, log: log, now: now}
	s.preview = newPreviewer(cfg.PreviewAllowPrivate)
	if cfg.PreviewAllowPrivate {
		log.Warn("CIRRUS_URL_PREVIEW_ALLOW_PRIVATE is on: URL previews can reach loopback, private and cloud metadata addresses (SSRF). Use this only in tests.")
	}
	return s
}

// Config returns the settings in effect (defaults filled in).
func (s *Service) Config() Config { return s.cfg }

// Record states.
const (
	StatePending = "pending" // created by /create, bytes not yet uploaded
	StateReady   = "ready"
)

// Record is one piece of media's metadata.
type Record struct {
	State       string    `json:"state"`
	Uploader    id.UserID `json:"uploader,omitempty"`
	ContentType string    `json:"content_type,omitempty"`
	Filename    string    `json:"filename,omitempty"`
	Size        int64     `json:"size,omitempty"`
	SHA256      string    `json:"sha256,omitempty"`
	// Blob is the key of the bytes in the blob store.
	Blob       string `json:"blob,omitempty"`
	CreatedMS  int64  `json:"created_ts"`
	UploadedMS int64  `json:"uploaded_ts,omitempty"`
	// ExpiresMS is a pending record's unused_expires_at.
	ExpiresMS int64 `json:"unused_expires_at,omitempty"`
	// Legacy marks media uploaded while unauthenticated downloads were
	// allowed: it stays reachable on the legacy endpoints after the freeze.
	Legacy bool `json:"legacy,omitempty"`
	// Image holds what the upload's header said about an image.
	Image *ImageInfo `json:"image,omitempty"`

	ServerName string `json:"-"`
	MediaID    string `json:"-"`
	// UploadURL is the MSC3870 upload URL Create made (not stored).
	UploadURL string `json:"-"`
	version   int64
}

// MXC is the record's content URI.
func (r *Record) MXC() string { return "mxc://" + r.ServerName + "/" + r.MediaID }

func recordKey(server, mediaID string) table.Key {
	return table.Key{PK: "media#" + server + "/" + mediaID, SK: "meta"}
}

func pendingIndexPK(user id.UserID) string { return "mediapending#" + string(user) }

// Errors the handlers map to answers.
var (
	// ErrRemoteUnavailable: the media belongs to another server and this
	// server has no way to fetch it (no federation configured). 502, as
	// for any upstream failure.
	ErrRemoteUnavailable = &httpapi.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN",
		Message: "media on other servers cannot be fetched here (federation is not configured)"}
	errNotYetUploaded = &httpapi.Error{Status: http.StatusGatewayTimeout, Code: "M_NOT_YET_UPLOADED",
		Message: "content has not yet been uploaded"}
	errCannotOverwrite = &httpapi.Error{Status: http.StatusConflict, Code: "M_CANNOT_OVERWRITE_MEDIA",
		Message: "media already uploaded"}
)

// ValidMediaID reports whether id is a media id the spec allows:
// A-Z a-z 0-9 _ - only (this also rules out path traversal).
func ValidMediaID(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// CheckAddress validates the server name and media id of an mxc:// URI.
func CheckAddress(server, mediaID string) error {
	if !id.ValidateServerName(server) {
		return httpapi.InvalidParam("invalid server name %q", server)
	}
	if !ValidMediaID(mediaID) {
		return httpapi.InvalidParam("invalid media id: only A-Z, a-z, 0-9, _ and - are allowed")
	}
	return nil
}

const idAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

func newMediaID() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = idAlphabet[int(b[i])%len(idAlphabet)]
	}
	return string(b[:])
}

// NormalizeContentType returns the content type to store for an upload's
// Content-Type header: the header if it parses as a media type, else
// application/octet-stream (also the spec's default when none is given).
func NormalizeContentType(h string) string {
	h = strings.TrimSpace(h)
	if h == "" || len(h) > 255 {
		return "application/octet-stream"
	}
	mt, params, err := mime.ParseMediaType(h)
	if err != nil {
		return "application/octet-stream"
	}
	return mime.FormatMediaType(mt, params)
}

// CheckFilename validates an upload's file name.
func CheckFilename(name string) error {
	if len(name) > 255 {
		return httpapi.InvalidParam("filename is longer than 255 bytes")
	}
	if !utf8.ValidString(name) {
		return httpapi.InvalidParam("filename is not valid UTF-8")
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return httpapi.InvalidParam("filename contains control characters")
		}
	}
	return nil
}

func (s *Service) nowMS() int64 { return s.now().UnixMilli() }

func (s *Service) get(ctx context.Context, server, mediaID string) (*Record, error) {
	it, err := s.t.Get(ctx, recordKey(server, mediaID))
	if err != nil {
		return nil, err
	}
	var r Record
	if err := json.Unmarshal(it.Data, &r); err != nil {
		return nil, fmt.Errorf("media: corrupt record %s/%s: %w", server, mediaID, err)
	}
	r.ServerName, r.MediaID, r.version = server, mediaID, it.Version
	return &r, nil
}

func (s *Service) item(r *Record) (table.Item, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return table.Item{}, err
	}
	k := recordKey(r.ServerName, r.MediaID)
	it := table.Item{PK: k.PK, SK: k.SK, Data: b, Version: r.version}
	if r.State == StatePending {
		it.TTL = (r.ExpiresMS + 999) / 1000
		it.GPK = pendingIndexPK(r.Uploader)
		it.GSK = fmt.Sprintf("%016d#%s", r.ExpiresMS, r.MediaID)
	}
	return it, nil
}

// Create reserves an mxc:// URI for a later upload (POST /_matrix/media/v1/create).
func (s *Service) Create(ctx context.Context, user id.UserID) (*Record, error) {
	now := s.nowMS()
	// Count the user's open reservations (expired ones are not returned).
	page, err := s.t.Query(ctx, table.Query{Index: table.IndexName, PK: pendingIndexPK(user), Limit: s.cfg.MaxPendingUploads})
	if err != nil {
		return nil, err
	}
	if len(page.Items) >= s.cfg.MaxPendingUploads {
		// The oldest reservation expires first: that is when one frees up.
		var first Record
		_ = json.Unmarshal(page.Items[0].Data, &first)
		wait := max(first.ExpiresMS-now, 1000)
		e := httpapi.LimitExceeded(wait)
		e.Message = fmt.Sprintf("too many pending uploads (at most %d): upload to or wait out the ones you have", s.cfg.MaxPendingUploads)
		return nil, e
	}
	r := &Record{
		State:      StatePending,
		Uploader:   user,
		CreatedMS:  now,
		ExpiresMS:  now + s.cfg.UnusedExpiry.Milliseconds(),
		ServerName: s.cfg.ServerName,
		MediaID:    newMediaID(),
		version:    1,
	}
	it, err := s.item(r)
	if err != nil {
		return nil, err
	}
	if err := s.t.Put(ctx, it, table.IfNotExists()); err != nil {
		return nil, err
	}
	if s.cfg.UploadURLs {
		if r.UploadURL, err = s.uploadURL(ctx, r); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Upload is one arriving upload's body and description.
type Upload struct {
	Body io.Reader
	// Declared is the Content-Length (-1 when unknown, e.g. chunked).
	Declared    int64
	ContentType string
	Filename    string
}

// Store uploads new media (POST /_matrix/media/v3/upload) and returns its record.
func (s *Service) Store(ctx context.Context, user id.UserID, up Upload) (*Record, error) {
	if err := s.checkUpload(up); err != nil {
		return nil, err
	}
	now := s.nowMS()
	r := &Record{
		State:      StateReady,
		Uploader:   user,
		CreatedMS:  now,
		ServerName: s.cfg.ServerName,
		MediaID:    newMediaID(),
		version:    1,
	}
	if err := s.receive(ctx, r, up); err != nil {
		return nil, err
	}
	it, err := s.item(r)
	if err != nil {
		return nil, err
	}
	if err := s.t.Put(ctx, it, table.IfNotExists()); err != nil {
		return nil, err
	}
	return r, nil
}

// StoreAt uploads the bytes of an mxc:// URI reserved with Create
// (PUT /_matrix/media/v3/upload/{serverName}/{mediaId}).
func (s *Service) StoreAt(ctx context.Context, user id.UserID, server, mediaID string, up Upload) error {
	if err := CheckAddress(server, mediaID); err != nil {
		return err
	}
	if server != s.cfg.ServerName {
		return httpapi.NotFound("unknown media id: it was not created on this server")
	}
	r, err := s.get(ctx, server, mediaID)
	if errors.Is(err, table.ErrNotFound) {
		return httpapi.NotFound("unknown media id: never created, or expired")
	}
	if err != nil {
		return err
	}
	// Check everything that does not need the body before reading it.
	if r.State != StatePending {
		return errCannotOverwrite
	}
	if r.Uploader != user {
		return httpapi.Forbidden("this media id was created by another user")
	}
	if err := s.checkUpload(up); err != nil {
		return err
	}
	if err := s.receive(ctx, r, up); err != nil {
		return err
	}
	prev := r.version
	r.State, r.ExpiresMS, r.version = StateReady, 0, prev+1
	it, err := s.item(r)
	if err != nil {
		return err
	}
	// Only the pending version we read may be replaced: a concurrent upload
	// that finished first wins, and an expired reservation is gone.
	err = s.t.Put(ctx, it, table.IfVersion(prev))
	if errors.Is(err, table.ErrConditionFailed) {
		cur, gerr := s.get(ctx, server, mediaID)
		if errors.Is(gerr, table.ErrNotFound) {
			return httpapi.NotFound("unknown media id: expired during the upload")
		}
		if gerr == nil && cur.State == StatePending {
			return httpapi.Unknown("media record changed during the upload; try again")
		}
		return errCannotOverwrite
	}
	return err
}

func (s *Service) checkUpload(up Upload) error {
	if err := CheckFilename(up.Filename); err != nil {
		return err
	}
	if limit := s.cfg.MaxUploadBytes; up.Declared > limit {
		return tooLarge(limit)
	}
	return nil
}

func tooLarge(limit int64) *httpapi.Error {
	return httpapi.TooLarge("cannot upload files larger than %d bytes", limit)
}

// receive reads the body to a temporary file, stores its bytes (once per
// distinct content) and fills in r's content fields.
func (s *Service) receive(ctx context.Context, r *Record, up Upload) error {
	sp, err := spool(ctx, s.cfg.TempDir, up.Body, up.Declared, s.cfg.MaxUploadBytes)
	if err != nil {
		return err
	}
	defer sp.Close()
	r.ContentType = NormalizeContentType(up.ContentType)
	r.Filename = up.Filename
	r.Size = sp.Size
	r.SHA256 = sp.SHA256
	r.UploadedMS = s.nowMS()
	r.Legacy = s.cfg.LegacyUnauthenticated
	if isImageType(r.ContentType) {
		if info, err := probeImage(sp.file()); err == nil {
			r.Image = info
		}
	}
	key, err := s.storeBlob(ctx, sp, r.ContentType)
	if err != nil {
		return err
	}
	r.Blob = key
	return nil
}

// storeBlob puts the spooled bytes under their content key unless an equal
// upload already did.
func (s *Service) storeBlob(ctx context.Context, sp *spooled, contentType string) (string, error) {
	key := "content/" + sp.SHA256
	info, err := s.blobs.Head(ctx, key)
	if err == nil && info.Size == sp.Size {
		return key, nil
	}
	if err != nil && !errors.Is(err, blob.ErrNotFound) {
		return "", err
	}
	f, err := sp.rewind()
	if err != nil {
		return "", err
	}
	if err := s.blobs.Put(ctx, key, f, sp.Size, contentType); err != nil {
		return "", err
	}
	return key, nil
}

// Lookup finds local media for download, waiting up to wait for a pending
// upload to complete (504 M_NOT_YET_UPLOADED after that). Remote media is
// served from the cache, or fetched from its server (wait bounds how long
// it may take to start answering) unless allowRemote is false (404).
func (s *Service) Lookup(ctx context.Context, server, mediaID string, wait time.Duration, allowRemote bool) (*Record, error) {
	if err := CheckAddress(server, mediaID); err != nil {
		return nil, err
	}
	if server != s.cfg.ServerName {
		return s.remote(ctx, server, mediaID, wait, allowRemote)
	}
	// The wait is real time, whatever clock the service runs on.
	timer := time.NewTimer(min(max(wait, 0), MaxDownloadWait))
	defer timer.Stop()
	delay := 100 * time.Millisecond
	for {
		r, err := s.get(ctx, server, mediaID)
		if errors.Is(err, table.ErrNotFound) {
			return nil, httpapi.NotFound("media not found")
		}
		if err != nil {
			return nil, err
		}
		if r.State == StateReady {
			return r, nil
		}
		poll := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			poll.Stop()
			return nil, ctx.Err()
		case <-timer.C:
			poll.Stop()
			return nil, errNotYetUploaded
		case <-poll.C:
		}
		delay = min(delay*2, time.Second)
	}
}

// LegacyAllowed reports whether r may be served by the deprecated
// unauthenticated endpoints: always when the setting allows them, otherwise
// only media uploaded before the freeze (while the setting was on).
func (s *Service) LegacyAllowed(r *Record) bool {
	return s.cfg.LegacyUnauthenticated || r.Legacy
}
