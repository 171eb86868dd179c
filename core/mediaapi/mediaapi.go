// Package mediaapi holds the HTTP handlers of the content repository
// (/_matrix/media/* and /_matrix/client/v1/media/*) over core/media.
//
// Uploads and downloads are Raw routes: they stream bodies instead of
// going through the router's JSON body limit. Downloads set the headers the
// spec asks for on served content (Content-Security-Policy sandbox, nosniff,
// Cross-Origin-Resource-Policy, inline disposition only for safe types).
//
// On Lambda a response cannot exceed the invocation payload limit, so large
// downloads answer 307 to a presigned S3 URL (the authenticated endpoints
// allow it; the legacy ones only with allow_redirect=true). Uploads have no
// such way out: the spec gives the upload endpoints no redirect, and API
// Gateway/Lambda refuse a request body over ~6 MB before Cirrus runs, so on
// Lambda uploads are limited to media.LambdaPayloadLimit (advertised in
// /config); the all-in-one process has no such limit, and a deployment can
// send the upload routes to one (MediaUploadOrigin in template.yaml).
// Clients that speak MSC3870 get an upload URL from /create and upload
// straight to S3.
//
// federation.go serves our media to other servers (multipart/mixed).
package mediaapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/media"
)

// ContentSecurityPolicy is sent with all served media: nothing in it may
// run scripts or load anything else.
const ContentSecurityPolicy = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"

// API serves the media endpoints.
type API struct {
	Media *media.Service
	Log   *slog.Logger
}

func (a *API) log() *slog.Logger {
	if a.Log != nil {
		return a.Log
	}
	return slog.Default()
}

// fail answers err: Matrix errors as they are, anything else as 500 (logged).
func (a *API) fail(w http.ResponseWriter, r *httpapi.Request, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away (or stopped sending mid-body); answer
		// anyway in case it still listens.
		httpapi.WriteError(w, httpapi.BadRequest("the request was cancelled before it was complete"))
		return
	}
	e, known := httpapi.AsError(err)
	if !known {
		a.log().Error("media request failed", "method", r.Method, "path", r.URL.Path, "request_id", httpapi.RequestID(r.Context()), "err", err)
	}
	httpapi.WriteError(w, e)
}

// uploadOf describes a request's body. Behind API Gateway the body arrives
// whole and the Content-Length header may disagree with it, so the header,
// when present, is what the body is checked against.
func uploadOf(r *httpapi.Request) (media.Upload, error) {
	declared := r.ContentLength
	if declared == 0 && r.Request.Body != nil && r.Request.Body != http.NoBody {
		// Zero with a body means unknown (a request built from a Lambda
		// event without the header); net/http's server uses NoBody for
		// a real zero.
		declared = -1
	}
	if h := r.Header.Get("Content-Length"); h != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(h), 10, 64)
		if err != nil || n < 0 {
			return media.Upload{}, httpapi.BadRequest("invalid Content-Length header")
		}
		declared = n
	}
	return media.Upload{
		Body:        r.Request.Body,
		Declared:    declared,
		ContentType: r.Header.Get("Content-Type"),
		Filename:    r.URL.Query().Get("filename"),
	}, nil
}

// Upload is POST /_matrix/media/v3/upload.
func (a *API) Upload(w http.ResponseWriter, r *httpapi.Request) {
	up, err := uploadOf(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	rec, err := a.Media.Store(r.Context(), r.Caller.UserID, up)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"content_uri": rec.MXC()})
}

// UploadTo is PUT /_matrix/media/v3/upload/{serverName}/{mediaId}.
func (a *API) UploadTo(w http.ResponseWriter, r *httpapi.Request) {
	up, err := uploadOf(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.Media.StoreAt(r.Context(), r.Caller.UserID, r.PathValue("serverName"), r.PathValue("mediaId"), up); err != nil {
		a.fail(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, httpapi.Empty{})
}

type createResp struct {
	ContentURI      string `json:"content_uri"`
	UnusedExpiresAt int64  `json:"unused_expires_at"`
	// UploadURL is MSC3870's: where the client may PUT the bytes instead.
	UploadURL string `json:"com.beeper.msc3870.upload_url,omitempty"`
}

// Create is POST /_matrix/media/v1/create.
func (a *API) Create(r *httpapi.Request) (any, error) {
	rec, err := a.Media.Create(r.Ctx(), r.Caller.UserID)
	if err != nil {
		return nil, err
	}
	return createResp{ContentURI: rec.MXC(), UnusedExpiresAt: rec.ExpiresMS, UploadURL: rec.UploadURL}, nil
}

// CompleteUpload is MSC3870's POST /_matrix/media/unstable/com.beeper.msc3870/upload/{serverName}/{mediaId}/complete:
// the bytes were PUT to the upload URL /create gave; take them in.
func (a *API) CompleteUpload(r *httpapi.Request) (any, error) {
	rec, err := a.Media.CompleteUpload(r.Ctx(), r.Caller.UserID, r.PathValue("serverName"), r.PathValue("mediaId"), r.URL.Query().Get("filename"))
	if err != nil {
		return nil, err
	}
	return map[string]string{"content_uri": rec.MXC()}, nil
}

// Config is GET /_matrix/client/v1/media/config (and the legacy
// /_matrix/media/v3/config): the upload limit a standard client can
// actually use here (media.Config.UploadLimit says why).
func (a *API) Config(r *httpapi.Request) (any, error) {
	return map[string]int64{"m.upload.size": a.Media.Config().UploadLimit()}, nil
}

// Preview is GET /_matrix/client/v1/media/preview_url (and the legacy
// /_matrix/media/v3/preview_url, which also requires authentication).
func (a *API) Preview(r *httpapi.Request) (any, error) {
	ts, err := r.QueryInt("ts", 0, 0, 1<<53)
	if err != nil {
		return nil, err
	}
	return a.Media.Preview(r.Ctx(), r.Caller.UserID, r.URL.Query().Get("url"), ts)
}

// Download is GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}].
func (a *API) Download(w http.ResponseWriter, r *httpapi.Request) { a.download(w, r, false) }

// DownloadLegacy is the deprecated unauthenticated GET /_matrix/media/v3/download/….
func (a *API) DownloadLegacy(w http.ResponseWriter, r *httpapi.Request) { a.download(w, r, true) }

// Thumbnail is GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}.
func (a *API) Thumbnail(w http.ResponseWriter, r *httpapi.Request) { a.thumbnail(w, r, false) }

// ThumbnailLegacy is the deprecated unauthenticated GET /_matrix/media/v3/thumbnail/….
func (a *API) ThumbnailLegacy(w http.ResponseWriter, r *httpapi.Request) { a.thumbnail(w, r, true) }

// fetchOptions are the query parameters shared by downloads and thumbnails.
type fetchOptions struct {
	wait          time.Duration
	allowRemote   bool
	allowRedirect bool
}

func parseFetchOptions(r *httpapi.Request, legacy bool) (fetchOptions, error) {
	o := fetchOptions{allowRemote: true, allowRedirect: !legacy}
	ms, err := r.QueryInt("timeout_ms", media.DefaultDownloadWait.Milliseconds(), 0, 1<<53)
	if err != nil {
		return o, err
	}
	o.wait = time.Duration(ms) * time.Millisecond
	if legacy {
		if o.allowRemote, err = queryBool(r, "allow_remote", true); err != nil {
			return o, err
		}
		// The legacy endpoints must send the content itself unless the
		// client says it follows redirects.
		if o.allowRedirect, err = queryBool(r, "allow_redirect", false); err != nil {
			return o, err
		}
	}
	return o, nil
}

func queryBool(r *httpapi.Request, name string, def bool) (bool, error) {
	switch v := r.URL.Query().Get(name); v {
	case "":
		return def, nil
	case "true":
		return true, nil
	case "false":
		return false, nil
	default:
		return false, httpapi.InvalidParam("query parameter %s must be true or false", name)
	}
}

// lookup finds the media of a download or thumbnail request; on the legacy
// endpoints media uploaded after the freeze is answered 404, as the spec
// allows for servers that moved to authenticated media.
func (a *API) lookup(r *httpapi.Request, o fetchOptions, legacy bool) (*media.Record, error) {
	rec, err := a.Media.Lookup(r.Context(), r.PathValue("serverName"), r.PathValue("mediaId"), o.wait, o.allowRemote)
	if err != nil {
		return nil, err
	}
	if legacy && !a.Media.LegacyAllowed(rec) {
		return nil, httpapi.NotFound("media not found: use the authenticated endpoints under /_matrix/client/v1/media")
	}
	return rec, nil
}

func (a *API) download(w http.ResponseWriter, r *httpapi.Request, legacy bool) {
	o, err := parseFetchOptions(r, legacy)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	name := r.PathValue("fileName")
	if err := media.CheckFilename(name); err != nil {
		a.fail(w, r, err)
		return
	}
	rec, err := a.lookup(r, o, legacy)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	c := a.Media.Download(rec)
	if name != "" {
		c.Filename = name
	}
	a.serve(w, r, c, false, o.allowRedirect, !legacy)
}

func (a *API) thumbnail(w http.ResponseWriter, r *httpapi.Request, legacy bool) {
	width, height, method, animated, err := thumbnailParams(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	o, err := parseFetchOptions(r, legacy)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var c *media.Content
	if server := r.PathValue("serverName"); server != a.Media.Config().ServerName {
		// Remote media: the remote server's thumbnail, cached per size.
		c, err = a.Media.RemoteThumbnail(r.Context(), server, r.PathValue("mediaId"), width, height, method, animated, o.wait, o.allowRemote, legacy)
	} else {
		var rec *media.Record
		if rec, err = a.lookup(r, o, legacy); err == nil {
			c, err = a.Media.Thumbnail(r.Context(), rec, width, height, method, animated)
		}
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.serve(w, r, c, true, o.allowRedirect, !legacy)
}

// thumbnailParams reads width, height, method and animated.
func thumbnailParams(r *httpapi.Request) (width, height int, method string, animated bool, err error) {
	q := r.URL.Query()
	dim := func(name string) (int, error) {
		v := q.Get(name)
		if v == "" {
			return 0, httpapi.MissingParam("missing %s parameter", name)
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1<<16 {
			return 0, httpapi.InvalidParam("%s must be a positive integer", name)
		}
		return n, nil
	}
	if width, err = dim("width"); err != nil {
		return
	}
	if height, err = dim("height"); err != nil {
		return
	}
	method = q.Get("method")
	switch method {
	case "":
		method = media.MethodScale
	case media.MethodCrop, media.MethodScale:
	default:
		err = httpapi.InvalidParam("method must be crop or scale")
		return
	}
	animated, err = queryBool(r, "animated", false)
	return
}

// inlineTypes are the content types the spec lists as safe to serve inline.
var inlineTypes = map[string]bool{
	"text/css": true, "text/plain": true, "text/csv": true,
	"application/json": true, "application/ld+json": true,
	"image/jpeg": true, "image/gif": true, "image/png": true, "image/apng": true, "image/webp": true, "image/avif": true,
	"video/mp4": true, "video/webm": true, "video/ogg": true, "video/quicktime": true,
	"audio/mp4": true, "audio/webm": true, "audio/aac": true, "audio/mpeg": true, "audio/ogg": true,
	"audio/wave": true, "audio/wav": true, "audio/x-wav": true, "audio/x-pn-wav": true, "audio/flac": true, "audio/x-flac": true,
}

// InlineSafe reports whether content of this type may be served inline.
func InlineSafe(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && inlineTypes[strings.ToLower(mt)]
}

// ContentDisposition builds the header: inline for safe types (or when
// forced, for thumbnails), attachment otherwise, with the file name if any.
func ContentDisposition(contentType, filename string, forceInline bool) string {
	kind := "attachment"
	if forceInline || InlineSafe(contentType) {
		kind = "inline"
	}
	if filename == "" {
		return kind
	}
	return kind + "; " + filenameParam(filename)
}

// filenameParam is the filename parameter: quoted when the name is
// printable ASCII, else in RFC 5987's UTF-8 percent-encoded form.
func filenameParam(name string) string {
	ascii := true
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c >= 0x7f {
			ascii = false
			break
		}
	}
	if ascii {
		return `filename="` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(name) + `"`
	}
	var b strings.Builder
	b.WriteString("filename*=utf-8''")
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$&+-.^_`|~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// serve sends content with the safe-serving headers, or a redirect to the
// blob store for large content when allowed and possible.
func (a *API) serve(w http.ResponseWriter, r *httpapi.Request, c *media.Content, thumbnail, allowRedirect, private bool) {
	defer c.Close()
	disposition := ContentDisposition(c.ContentType, c.Filename, thumbnail)
	cache := "public, max-age=86400"
	if private {
		// Authenticated media must not be kept by shared caches.
		cache = "private, max-age=86400"
	}
	if c.Data == nil && a.Media.ShouldRedirect(c.Size) && allowRedirect {
		c.Close()
		url, ok, err := a.Media.RedirectURL(r.Context(), c, disposition, cache)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		if ok {
			// The URL expires: the redirect itself must not be cached.
			w.Header().Set("Cache-Control", "no-store")
			w.Header().Set("Location", url)
			w.WriteHeader(http.StatusTemporaryRedirect)
			return
		}
	}
	if a.Media.TooLargeToServe(c.Size) {
		a.fail(w, r, &httpapi.Error{Status: http.StatusBadGateway, Code: "M_TOO_LARGE",
			Message: "content is too large to serve here; use the authenticated endpoint, which redirects"})
		return
	}
	var body io.ReadSeeker
	var rc io.ReadCloser
	if c.Data != nil {
		body = bytes.NewReader(c.Data)
	} else {
		var err error
		if rc, err = a.Media.Open(r.Context(), c); err != nil {
			a.fail(w, r, err)
			return
		}
		defer rc.Close()
		body, _ = rc.(io.ReadSeeker)
	}
	h := w.Header()
	h.Set("Content-Type", c.ContentType)
	h.Set("Content-Disposition", disposition)
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	h.Set("Cache-Control", cache)
	if c.ETag != "" {
		h.Set("ETag", c.ETag)
	}
	if body != nil {
		// Ranges and conditional requests for seekable bodies (the
		// embedded store's files, thumbnails just made).
		http.ServeContent(w, r.Request, "", time.Time{}, body)
		return
	}
	if c.ETag != "" && r.Header.Get("If-None-Match") == c.ETag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Length", strconv.FormatInt(c.Size, 10))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	if _, err := io.Copy(w, rc); err != nil {
		a.log().Warn("media: download broke off", "path", r.URL.Path, "err", err)
	}
}
