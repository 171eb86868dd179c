package mediaapi

import (
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"time"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/media"
)

// FederationDownload is GET /_matrix/federation/v1/media/download/{mediaId}:
// our own media for another server (X-Matrix authenticated by the router).
func (a *API) FederationDownload(w http.ResponseWriter, r *httpapi.Request) {
	wait, err := federationWait(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	rec, err := a.Media.Lookup(r.Context(), a.Media.Config().ServerName, r.PathValue("mediaId"), wait, false)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.serveMultipart(w, r, a.Media.Download(rec), false)
}

// FederationThumbnail is GET /_matrix/federation/v1/media/thumbnail/{mediaId}.
func (a *API) FederationThumbnail(w http.ResponseWriter, r *httpapi.Request) {
	width, height, method, animated, err := thumbnailParams(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	wait, err := federationWait(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	rec, err := a.Media.Lookup(r.Context(), a.Media.Config().ServerName, r.PathValue("mediaId"), wait, false)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	c, err := a.Media.Thumbnail(r.Context(), rec, width, height, method, animated)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.serveMultipart(w, r, c, true)
}

func federationWait(r *httpapi.Request) (time.Duration, error) {
	ms, err := r.QueryInt("timeout_ms", media.DefaultDownloadWait.Milliseconds(), 0, 1<<53)
	return time.Duration(ms) * time.Millisecond, err
}

// serveMultipart answers multipart/mixed as the federation media endpoints
// must: a JSON metadata part ({}), then the bytes with their Content-Type
// and Content-Disposition, or, for content too large to pass through this
// process comfortably, a Location part with a presigned URL of the blob
// store (which sets the same headers on its answer).
func (a *API) serveMultipart(w http.ResponseWriter, r *httpapi.Request, c *media.Content, thumbnail bool) {
	defer c.Close()
	disposition := ContentDisposition(c.ContentType, c.Filename, thumbnail)
	location := ""
	if c.Data == nil && a.Media.ShouldRedirect(c.Size) {
		url, ok, err := a.Media.RedirectURL(r.Context(), c, disposition, "public, max-age=86400")
		if err != nil {
			a.fail(w, r, err)
			return
		}
		if ok {
			location = url
		}
	}
	if location == "" && a.Media.TooLargeToServe(c.Size) {
		a.fail(w, r, &httpapi.Error{Status: http.StatusBadGateway, Code: "M_TOO_LARGE", Message: "content is too large to serve"})
		return
	}
	var body io.ReadCloser
	if location == "" {
		var err error
		if body, err = a.Media.Open(r.Context(), c); err != nil {
			a.fail(w, r, err)
			return
		}
		defer body.Close()
	}
	mw := multipart.NewWriter(w)
	h := w.Header()
	h.Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	meta, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
	if err == nil {
		_, err = io.WriteString(meta, "{}")
	}
	if err != nil {
		return
	}
	ph := textproto.MIMEHeader{}
	if location != "" {
		ph.Set("Location", location)
	} else {
		ph.Set("Content-Type", c.ContentType)
		ph.Set("Content-Disposition", disposition)
	}
	part, err := mw.CreatePart(ph)
	if err != nil {
		return
	}
	if body != nil && r.Method != http.MethodHead {
		if _, err := io.Copy(part, body); err != nil {
			a.log().Warn("media: federation download broke off", "path", r.URL.Path, "origin", r.Origin, "err", err)
			return
		}
	}
	_ = mw.Close()
}
