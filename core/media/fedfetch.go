package media

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
)

// FederationFetcher fetches remote media over federation: the
// authenticated /_matrix/federation/v1/media endpoints (signed requests),
// falling back to the unauthenticated /_matrix/media/v3 ones for servers
// that do not know them yet. mautrix's Client.DownloadMedia is not used: it
// swallows request errors, has no thumbnail call and no legacy fallback.
type FederationFetcher struct {
	Client *mfed.Client
	// AllowHTTPRedirects lets a Location point at plain http (loopback
	// tests with an S3 stand-in); otherwise only https is followed.
	AllowHTTPRedirects bool
}

// maxMetadataBytes bounds the JSON part of a multipart answer.
const maxMetadataBytes = 64 << 10

// FetchMedia implements Fetcher.
func (f *FederationFetcher) FetchMedia(ctx context.Context, req RemoteRequest) (*RemoteFile, error) {
	wait := req.Wait
	if wait <= 0 {
		wait = DefaultDownloadWait
	}
	q := url.Values{}
	q.Set("timeout_ms", strconv.FormatInt(wait.Milliseconds(), 10))
	path := mfed.URLPath{"v1", "media", "download", req.MediaID}
	if req.Thumb != nil {
		path = mfed.URLPath{"v1", "media", "thumbnail", req.MediaID}
		addThumbQuery(q, req)
	}
	resp, err := f.request(ctx, req, wait, path, q, true)
	if err != nil {
		if !fallBack(err) {
			return nil, f.mapError(req, err)
		}
		return f.legacy(ctx, req, wait)
	}
	file, err := f.readMultipart(ctx, req, resp)
	if err != nil {
		resp.Body.Close()
		return nil, err
	}
	return file, nil
}

func addThumbQuery(q url.Values, req RemoteRequest) {
	q.Set("width", strconv.Itoa(req.Thumb.W))
	q.Set("height", strconv.Itoa(req.Thumb.H))
	q.Set("method", req.Thumb.Method)
	q.Set("animated", strconv.FormatBool(req.Animated))
}

// request makes one federation request whose answer must start arriving
// within wait; the body may then take as long as the client allows.
func (f *FederationFetcher) request(ctx context.Context, req RemoteRequest, wait time.Duration, path mautrix.PrefixableURLPath, q url.Values, signed bool) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	timer := time.AfterFunc(wait, func() { cancel(errRemoteSlow) })
	_, resp, err := f.Client.MakeFullRequest(ctx, mfed.RequestParams{
		ServerName:   req.Server,
		Method:       http.MethodGet,
		Path:         path,
		Query:        q,
		Authenticate: signed,
		DontReadBody: true,
	})
	if !timer.Stop() && err == nil {
		// The answer came just as the timer fired: its body is cut off.
		resp.Body.Close()
		err = errRemoteSlow
	}
	if err != nil {
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		cancel(nil)
		if errors.Is(context.Cause(ctx), errRemoteSlow) {
			return nil, errRemoteSlow
		}
		return nil, err
	}
	// The body reads under the caller's context from here on.
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: func() { cancel(nil) }}
	return resp, nil
}

var errRemoteSlow = errors.New("the remote server did not answer in time")

type cancelBody struct {
	io.ReadCloser
	cancel func()
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// fallBack reports whether a failed request to the federation media
// endpoints means the server does not have them (so the legacy endpoints
// are tried): 404/405/400 with M_UNRECOGNIZED, or 404 without a Matrix
// error (a server that knows no such path). A 404 M_NOT_FOUND is final.
func fallBack(err error) bool {
	var he mautrix.HTTPError
	if !errors.As(err, &he) || he.Response == nil {
		return false
	}
	code := ""
	if he.RespError != nil {
		code = he.RespError.ErrCode
	}
	switch he.Response.StatusCode {
	case http.StatusNotFound:
		return code == "" || code == "M_UNRECOGNIZED"
	case http.StatusMethodNotAllowed, http.StatusBadRequest, http.StatusNotImplemented:
		return code == "M_UNRECOGNIZED"
	}
	return false
}

// mapError turns a failed remote request into the answer for our client.
func (f *FederationFetcher) mapError(req RemoteRequest, err error) error {
	if errors.Is(err, errRemoteSlow) || errors.Is(err, context.DeadlineExceeded) {
		return &httpapi.Error{Status: http.StatusGatewayTimeout, Code: "M_NOT_YET_UPLOADED",
			Message: fmt.Sprintf("%s did not answer within %d ms", req.Server, req.Wait.Milliseconds())}
	}
	var he mautrix.HTTPError
	if errors.As(err, &he) && he.Response != nil {
		code, msg := "", ""
		if he.RespError != nil {
			code, msg = he.RespError.ErrCode, he.RespError.Err
		}
		switch st := he.Response.StatusCode; {
		case st == http.StatusNotFound:
			return httpapi.NotFound("%s: media not found", req.Server)
		case code == "M_NOT_YET_UPLOADED":
			return &httpapi.Error{Status: http.StatusGatewayTimeout, Code: code, Message: req.Server + ": " + msg}
		case code == "M_TOO_LARGE":
			return &httpapi.Error{Status: http.StatusBadGateway, Code: code, Message: req.Server + ": " + msg}
		case req.Thumb != nil && st == http.StatusBadRequest && code != "":
			// The remote cannot thumbnail it (not an image, say).
			return &httpapi.Error{Status: http.StatusBadRequest, Code: code, Message: req.Server + ": " + msg}
		default:
			return &httpapi.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN",
				Message: fmt.Sprintf("%s answered %d %s", req.Server, st, code)}
		}
	}
	return &httpapi.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN", Message: fmt.Sprintf("could not reach %s: %v", req.Server, err)}
}

// readMultipart reads a federation media answer: a JSON part, then either
// the bytes or a Location to fetch them from.
func (f *FederationFetcher) readMultipart(ctx context.Context, req RemoteRequest, resp *http.Response) (*RemoteFile, error) {
	bad := func(format string, args ...any) error {
		return &httpapi.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN",
			Message: req.Server + ": malformed media answer: " + fmt.Sprintf(format, args...)}
	}
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		return nil, bad("Content-Type %q is not multipart/mixed with a boundary", resp.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	meta, err := mr.NextPart()
	if err != nil {
		return nil, bad("no metadata part: %v", err)
	}
	var m map[string]any
	if err := json.NewDecoder(io.LimitReader(meta, maxMetadataBytes)).Decode(&m); err != nil {
		return nil, bad("metadata part is not a JSON object: %v", err)
	}
	part, err := mr.NextPart()
	if err != nil {
		return nil, bad("no content part: %v", err)
	}
	if loc := part.Header.Get("Location"); loc != "" {
		resp.Body.Close()
		return f.follow(ctx, req, loc)
	}
	file := &RemoteFile{Body: &partBody{Part: part, resp: resp.Body}, Size: -1, ContentType: part.Header.Get("Content-Type")}
	file.Filename = dispositionName(part.Header.Get("Content-Disposition"))
	return file, nil
}

type partBody struct {
	*multipart.Part
	resp io.ReadCloser
}

func (p *partBody) Close() error {
	p.Part.Close()
	return p.resp.Close()
}

// follow fetches the bytes a Location (or a legacy redirect) points at,
// through the federation client's guarded dialer.
func (f *FederationFetcher) follow(ctx context.Context, req RemoteRequest, loc string) (*RemoteFile, error) {
	u, err := url.Parse(loc)
	if err != nil || !(u.Scheme == "https" || u.Scheme == "http" && f.AllowHTTPRedirects) || u.Host == "" {
		return nil, &httpapi.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN",
			Message: fmt.Sprintf("%s: refusing to follow the media location %q", req.Server, loc)}
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	hc := f.Client.ExtHTTP
	if f.AllowHTTPRedirects {
		cp := *hc
		cp.CheckRedirect = nil
		hc = &cp
	}
	resp, err := hc.Do(hr)
	if err != nil {
		return nil, f.mapError(req, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			return nil, httpapi.NotFound("%s: media not found", req.Server)
		}
		return nil, &httpapi.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN",
			Message: fmt.Sprintf("%s: the media location answered %d", req.Server, resp.StatusCode)}
	}
	return fileOf(resp), nil
}

func fileOf(resp *http.Response) *RemoteFile {
	return &RemoteFile{Body: resp.Body, Size: resp.ContentLength, ContentType: resp.Header.Get("Content-Type"),
		Filename: dispositionName(resp.Header.Get("Content-Disposition"))}
}

// legacy fetches through the deprecated unauthenticated endpoints
// (/_matrix/media/v3), asking the remote not to fetch from elsewhere and
// allowing it to redirect.
func (f *FederationFetcher) legacy(ctx context.Context, req RemoteRequest, wait time.Duration) (*RemoteFile, error) {
	q := url.Values{}
	q.Set("allow_remote", "false")
	q.Set("allow_redirect", "true")
	q.Set("timeout_ms", strconv.FormatInt(wait.Milliseconds(), 10))
	kind := "download"
	if req.Thumb != nil {
		kind = "thumbnail"
		addThumbQuery(q, req)
	}
	path := mautrix.BaseURLPath{"_matrix", "media", "v3", kind, req.Server, req.MediaID}
	resp, err := f.request(ctx, req, wait, path, q, false)
	if err != nil {
		var he mautrix.HTTPError
		if errors.As(err, &he) && he.Response != nil {
			if st := he.Response.StatusCode; st >= 300 && st < 400 {
				if loc := he.Response.Header.Get("Location"); loc != "" {
					return f.follow(ctx, req, loc)
				}
			}
		}
		return nil, f.mapError(req, err)
	}
	return fileOf(resp), nil
}

// dispositionName is the file name of a Content-Disposition header ("" if none).
func dispositionName(h string) string {
	if h == "" {
		return ""
	}
	_, params, err := mime.ParseMediaType(h)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(params["filename"])
}
