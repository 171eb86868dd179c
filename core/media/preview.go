package media

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/net/html"
	"golang.org/x/net/html/charset"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/netguard"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Preview limits.
const (
	maxPreviewURL      = 2048
	maxPreviewHTML     = 1 << 20  // bytes of a page read for its metadata
	maxPreviewImage    = 10 << 20 // bytes of an og:image stored as media
	maxPreviewKeys     = 64
	maxPreviewValue    = 1000 // characters of one value
	previewKeepTime    = 7 * 24 * time.Hour
	previewFetchBudget = 15 * time.Second
)

type previewer struct {
	client *http.Client
}

func newPreviewer(allowPrivate bool) *previewer {
	allow := netguard.PublicAddress
	if allowPrivate {
		allow = func(netip.Addr) bool { return true }
	}
	return &previewer{client: netguard.NewClient(allow)}
}

// SetPreviewPolicy replaces the address check of URL previews (tests).
func (s *Service) SetPreviewPolicy(allow func(netip.Addr) bool) {
	s.preview = &previewer{client: netguard.NewClient(allow)}
}

type previewItem struct {
	URL string         `json:"url"`
	OG  map[string]any `json:"og"`
}

// CheckPreviewURL parses a URL to preview: absolute http or https, with a
// host and no credentials. The fragment is dropped.
func CheckPreviewURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, httpapi.MissingParam("missing url parameter")
	}
	if len(raw) > maxPreviewURL {
		return nil, httpapi.InvalidParam("url is longer than %d bytes", maxPreviewURL)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" {
		return nil, httpapi.InvalidParam("url must be an absolute http or https URL")
	}
	if u.User != nil {
		return nil, httpapi.InvalidParam("url must not contain credentials")
	}
	u.Fragment, u.RawFragment = "", ""
	return u, nil
}

// Preview returns the OpenGraph data of a URL (GET .../preview_url): from
// the table when fetched recently (or, with ts, the newest preview fetched
// at or before ts), else fetched now and kept.
func (s *Service) Preview(ctx context.Context, user id.UserID, raw string, ts int64) (map[string]any, error) {
	u, err := CheckPreviewURL(raw)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(u.String()))
	pk := "urlpreview#" + hex.EncodeToString(sum[:])
	now := s.now()
	if ts > 0 {
		page, err := s.t.Query(ctx, table.Query{PK: pk, To: fmt.Sprintf("%016d", ts), Reverse: true, Limit: 1})
		if err != nil {
			return nil, err
		}
		if og, ok := decodePreview(page); ok {
			return og, nil
		}
	}
	page, err := s.t.Query(ctx, table.Query{PK: pk, Reverse: true, Limit: 1})
	if err != nil {
		return nil, err
	}
	if len(page.Items) == 1 {
		var fetched int64
		fmt.Sscanf(page.Items[0].SK, "%d", &fetched)
		if now.UnixMilli()-fetched < s.cfg.PreviewCacheTime.Milliseconds() {
			if og, ok := decodePreview(page); ok {
				return og, nil
			}
		}
	}
	og, err := s.fetchPreview(ctx, u)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(previewItem{URL: u.String(), OG: og})
	if err == nil {
		err = s.t.Put(ctx, table.Item{PK: pk, SK: fmt.Sprintf("%016d", now.UnixMilli()), Data: b,
			TTL: now.Add(previewKeepTime).Unix()}, table.Cond{})
	}
	if err != nil {
		s.log.Warn("media: could not cache a URL preview", "err", err)
	}
	return og, nil
}

func decodePreview(p table.Page) (map[string]any, bool) {
	if len(p.Items) == 0 {
		return nil, false
	}
	var it previewItem
	if err := json.Unmarshal(p.Items[0].Data, &it); err != nil || it.OG == nil {
		return nil, false
	}
	return it.OG, true
}

func (s *Service) fetch(ctx context.Context, u *url.URL, accept string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, httpapi.InvalidParam("url is not usable: %v", err)
	}
	req.Header.Set("User-Agent", "Mozilla/5.0 (compatible; Cirrus Matrix homeserver URL preview)")
	req.Header.Set("Accept", accept)
	resp, err := s.preview.client.Do(req)
	if err != nil {
		if netguard.Blocked(err) {
			return nil, httpapi.Forbidden("URL previews may not reach this address")
		}
		return nil, &httpapi.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN", Message: "could not fetch the URL"}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		resp.Body.Close()
		return nil, &httpapi.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN",
			Message: fmt.Sprintf("the URL answered HTTP %d", resp.StatusCode)}
	}
	return resp, nil
}

// fetchPreview fetches a page (or an image) and builds its preview.
func (s *Service) fetchPreview(ctx context.Context, u *url.URL) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(ctx, previewFetchBudget)
	defer cancel()
	resp, err := s.fetch(ctx, u, "text/html,application/xhtml+xml,image/*;q=0.9,*/*;q=0.5")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	ct := resp.Header.Get("Content-Type")
	og := map[string]any{}
	switch bt := baseType(ct); {
	case bt == "text/html" || bt == "application/xhtml+xml":
		og = ParseHTML(io.LimitReader(resp.Body, maxPreviewHTML), ct, resp.Request.URL)
		img, _ := og["og:image"].(string)
		dropImageKeys(og)
		if img != "" {
			if iu, err := url.Parse(img); err == nil {
				s.addImage(ctx, og, func() (*http.Response, error) { return s.fetch(ctx, iu, "image/*") })
			}
		}
	case strings.HasPrefix(bt, "image/"):
		s.addImage(ctx, og, func() (*http.Response, error) { return resp, nil })
	}
	return og, nil
}

func dropImageKeys(og map[string]any) {
	for k := range og {
		if k == "og:image" || strings.HasPrefix(k, "og:image:") {
			delete(og, k)
		}
	}
}

// addImage stores an image answer as local media and describes it in og.
// A missing, oversized or non-image answer just leaves the image out.
func (s *Service) addImage(ctx context.Context, og map[string]any, fetch func() (*http.Response, error)) {
	resp, err := fetch()
	if err != nil {
		return
	}
	defer resp.Body.Close()
	ct := resp.Header.Get("Content-Type")
	if !strings.HasPrefix(baseType(ct), "image/") {
		return
	}
	limit := min(int64(maxPreviewImage), s.cfg.MaxUploadBytes)
	if resp.ContentLength > limit {
		return
	}
	now := s.nowMS()
	r := &Record{State: StateReady, CreatedMS: now, ServerName: s.cfg.ServerName, MediaID: newMediaID(), version: 1}
	sp, err := spool(ctx, s.cfg.TempDir, resp.Body, resp.ContentLength, limit)
	if err != nil {
		return
	}
	defer sp.Close()
	r.ContentType = NormalizeContentType(ct)
	r.Size, r.SHA256, r.UploadedMS = sp.Size, sp.SHA256, now
	r.Legacy = s.cfg.LegacyUnauthenticated
	if info, err := probeImage(sp.file()); err == nil {
		r.Image = info
	}
	if r.Blob, err = s.storeBlob(ctx, sp, r.ContentType); err != nil {
		s.log.Warn("media: could not store a preview image", "err", err)
		return
	}
	it, err := s.item(r)
	if err == nil {
		err = s.t.Put(ctx, it, table.IfNotExists())
	}
	if err != nil {
		s.log.Warn("media: could not store a preview image", "err", err)
		return
	}
	og["og:image"] = r.MXC()
	og["og:image:type"] = r.ContentType
	og["matrix:image:size"] = r.Size
	if r.Image != nil {
		og["og:image:width"] = r.Image.Width
		og["og:image:height"] = r.Image.Height
	}
}

// ParseHTML reads a page's OpenGraph properties (og:*), falling back to
// <title>, <meta name="description"> and the first <img> for the title,
// description and image. contentType picks the character set (the page's
// own <meta charset> counts too); base resolves a relative image URL.
// Values are plain strings, at most maxPreviewValue characters.
func ParseHTML(r io.Reader, contentType string, base *url.URL) map[string]any {
	og := map[string]any{}
	rd, err := charset.NewReader(r, contentType)
	if err != nil {
		rd = r
	}
	z := html.NewTokenizer(rd)
	var title, desc, firstImg strings.Builder
	inTitle, titleDone := false, false
	for {
		tt := z.Next()
		if tt == html.ErrorToken {
			break
		}
		switch tt {
		case html.StartTagToken, html.SelfClosingTagToken:
			name, hasAttr := z.TagName()
			attrs := map[string]string{}
			for hasAttr {
				var k, v []byte
				k, v, hasAttr = z.TagAttr()
				if _, dup := attrs[string(k)]; !dup {
					attrs[string(k)] = string(v)
				}
			}
			switch string(name) {
			case "meta":
				prop := attrs["property"]
				if prop == "" {
					prop = attrs["name"]
				}
				prop = strings.ToLower(strings.TrimSpace(prop))
				content := clip(attrs["content"])
				if content == "" {
					continue
				}
				if strings.HasPrefix(prop, "og:") && len(prop) <= 100 && len(og) < maxPreviewKeys {
					if _, seen := og[prop]; !seen {
						og[prop] = content
					}
				}
				if prop == "description" && desc.Len() == 0 {
					desc.WriteString(content)
				}
			case "title":
				inTitle = !titleDone
			case "img":
				if firstImg.Len() == 0 && attrs["src"] != "" {
					firstImg.WriteString(attrs["src"])
				}
			}
		case html.TextToken:
			if inTitle && title.Len() < 4*maxPreviewValue {
				title.Write(z.Text())
			}
		case html.EndTagToken:
			if name, _ := z.TagName(); string(name) == "title" && inTitle {
				inTitle, titleDone = false, true
			}
		}
	}
	if _, ok := og["og:title"]; !ok {
		if t := clip(strings.Join(strings.Fields(title.String()), " ")); t != "" {
			og["og:title"] = t
		}
	}
	if _, ok := og["og:description"]; !ok && desc.Len() > 0 {
		og["og:description"] = desc.String()
	}
	if _, ok := og["og:image"]; !ok && firstImg.Len() > 0 {
		og["og:image"] = firstImg.String()
	}
	if img, ok := og["og:image"].(string); ok {
		delete(og, "og:image")
		if iu, err := base.Parse(strings.TrimSpace(img)); err == nil && (iu.Scheme == "http" || iu.Scheme == "https") {
			og["og:image"] = iu.String()
		}
	}
	return og
}

// clip trims s and cuts it to maxPreviewValue characters.
func clip(s string) string {
	s = strings.TrimSpace(s)
	if utf8.RuneCountInString(s) <= maxPreviewValue {
		return s
	}
	r := []rune(s)
	return string(r[:maxPreviewValue])
}
