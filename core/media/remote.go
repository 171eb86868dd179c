package media

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Remote media: media whose mxc:// URI names another server is fetched from
// that server through a Fetcher (federation), its bytes stored in the blob
// store like an upload's (content/<sha256>) and its record written under the
// remote server's name, so the next request is answered from here. Remote
// thumbnails are fetched per thumbnail box and cached the same way (item
// media#<server>/<id> | thumb#<box>).
//
// Concurrent first requests (in any process) agree through a lease item
// (media#<server>/<id> | fetch[#<box>], written IfNotExists with a short
// TTL): its holder fetches; the others wait for the record to appear. A
// failed fetch leaves its error in the lease for a few seconds, so waiters
// (and a burst of retries) get the same answer instead of each trying the
// remote server again. A holder that dies simply lets the lease expire.

// RemoteRequest asks a Fetcher for a piece of remote media or one thumbnail.
type RemoteRequest struct {
	Server  string
	MediaID string
	// Thumb is the thumbnail box wanted; nil fetches the media itself.
	Thumb    *Box
	Animated bool
	// Wait is how long the remote server may take to start answering
	// (the client's timeout_ms); it is passed on as the remote's timeout_ms.
	Wait time.Duration
	// MaxBytes bounds the body (502 M_TOO_LARGE above it).
	MaxBytes int64
}

// RemoteFile is a Fetcher's answer: the body (closed by the caller) and the
// headers that describe it.
type RemoteFile struct {
	Body io.ReadCloser
	// Size is the announced length, -1 when unknown.
	Size        int64
	ContentType string
	Filename    string
}

// Fetcher reaches other servers' content repositories. Its errors are
// Matrix errors for our client: 404 M_NOT_FOUND, 502 M_UNKNOWN (unreachable),
// 504 M_NOT_YET_UPLOADED (no answer in time), 502 M_TOO_LARGE.
type Fetcher interface {
	FetchMedia(ctx context.Context, req RemoteRequest) (*RemoteFile, error)
}

// SetFetcher installs the way to reach other servers (federation). Without
// one, remote media answers ErrRemoteUnavailable unless already cached.
func (s *Service) SetFetcher(f Fetcher) { s.fetcher = f }

// Lease timings.
const (
	// fetchLease bounds how long a fetch may hold the lease; waiters take
	// over after it (the holder crashed or hangs).
	fetchLease = 90 * time.Second
	// failureMemory is how long a failed fetch's error is reused.
	failureMemory = 5 * time.Second
)

// errTooLargeRemote is the spec's answer for remote media over our limit.
func errTooLargeRemote(limit int64) *httpapi.Error {
	return &httpapi.Error{Status: http.StatusBadGateway, Code: "M_TOO_LARGE",
		Message: fmt.Sprintf("remote content is larger than this server's limit of %d bytes", limit)}
}

// lease is the data of a fetch lease item.
type lease struct {
	// Failed holds the error of a fetch that failed (nil while fetching).
	Failed *httpapi.Error `json:"failed,omitempty"`
}

// leaseError is the JSON form of a remembered failure.
type leaseError struct {
	Status  int    `json:"status"`
	Code    string `json:"errcode"`
	Message string `json:"error"`
}

func (l lease) MarshalJSON() ([]byte, error) {
	if l.Failed == nil {
		return []byte(`{}`), nil
	}
	return json.Marshal(map[string]leaseError{"failed": {l.Failed.Status, l.Failed.Code, l.Failed.Message}})
}

func (l *lease) UnmarshalJSON(b []byte) error {
	var raw struct {
		Failed *leaseError `json:"failed"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	if raw.Failed != nil {
		l.Failed = &httpapi.Error{Status: raw.Failed.Status, Code: raw.Failed.Code, Message: raw.Failed.Message}
	}
	return nil
}

// singleFetch runs fetch at most once at a time for the cache entry read by
// cached, across processes: it returns what cached finds, fetching first
// when nothing is cached and this caller wins the lease.
func (s *Service) singleFetch(ctx context.Context, leaseKey table.Key, cached func() (bool, error), fetch func() error) error {
	delay := 50 * time.Millisecond
	for {
		ok, err := cached()
		if err != nil || ok {
			return err
		}
		now := s.now()
		held := table.Item{PK: leaseKey.PK, SK: leaseKey.SK, Data: []byte(`{}`), Version: 1, TTL: now.Add(fetchLease).Unix()}
		err = s.t.Put(ctx, held, table.IfNotExists())
		if err == nil {
			ferr := fetch()
			if ferr == nil {
				_ = s.t.Delete(context.WithoutCancel(ctx), leaseKey, table.IfVersion(1))
				continue // read what was cached
			}
			e, known := httpapi.AsError(ferr)
			if known && ctx.Err() == nil {
				b, _ := json.Marshal(lease{Failed: e})
				failed := table.Item{PK: leaseKey.PK, SK: leaseKey.SK, Data: b, Version: 2, TTL: s.now().Add(failureMemory).Unix()}
				if perr := s.t.Put(context.WithoutCancel(ctx), failed, table.IfVersion(1)); perr != nil {
					s.log.Warn("media: could not record a failed remote fetch", "key", leaseKey.PK, "err", perr)
				}
			} else {
				_ = s.t.Delete(context.WithoutCancel(ctx), leaseKey, table.IfVersion(1))
			}
			return ferr
		}
		if !errors.Is(err, table.ErrConditionFailed) {
			return err
		}
		// Someone else is fetching, or failed a moment ago.
		it, gerr := s.t.Get(ctx, leaseKey)
		if gerr == nil {
			var l lease
			if json.Unmarshal(it.Data, &l) == nil && l.Failed != nil {
				return l.Failed
			}
		} else if !errors.Is(gerr, table.ErrNotFound) {
			return gerr
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(delay*2, 500*time.Millisecond)
	}
}

// remote returns remote media's record, fetching and caching it first if
// this server has not got it.
func (s *Service) remote(ctx context.Context, server, mediaID string, wait time.Duration, allowRemote bool) (*Record, error) {
	var rec *Record
	cached := func() (bool, error) {
		r, err := s.get(ctx, server, mediaID)
		if errors.Is(err, table.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		rec = r
		return true, nil
	}
	if ok, err := cached(); err != nil || ok {
		return rec, err
	}
	if !allowRemote {
		return nil, httpapi.NotFound("media is remote and allow_remote is false")
	}
	if s.fetcher == nil {
		return nil, ErrRemoteUnavailable
	}
	lk := table.Key{PK: recordKey(server, mediaID).PK, SK: "fetch"}
	err := s.singleFetch(ctx, lk, cached, func() error {
		f, err := s.fetcher.FetchMedia(ctx, RemoteRequest{Server: server, MediaID: mediaID, Wait: wait, MaxBytes: s.cfg.MaxUploadBytes})
		if err != nil {
			return err
		}
		defer f.Body.Close()
		r, err := s.cacheRemote(ctx, server, mediaID, f)
		if err != nil {
			return err
		}
		it, err := s.item(r)
		if err != nil {
			return err
		}
		// Written once: a record already there (another process's lease
		// expired under a slow fetch) is kept.
		if err := s.t.Put(ctx, it, table.IfNotExists()); err != nil && !errors.Is(err, table.ErrConditionFailed) {
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return rec, nil
}

// cacheRemote stores a fetched body in the blob store and returns the
// record describing it (not yet written).
func (s *Service) cacheRemote(ctx context.Context, server, mediaID string, f *RemoteFile) (*Record, error) {
	limit := s.cfg.MaxUploadBytes
	if f.Size > limit {
		return nil, errTooLargeRemote(limit)
	}
	sp, err := spool(ctx, s.cfg.TempDir, f.Body, -1, limit)
	if err != nil {
		if e, ok := httpapi.AsError(err); ok && e.Code == "M_TOO_LARGE" {
			return nil, errTooLargeRemote(limit)
		}
		if e, ok := httpapi.AsError(err); ok && e.Status == http.StatusBadRequest {
			return nil, &httpapi.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN", Message: server + ": the media download broke off"}
		}
		return nil, err
	}
	defer sp.Close()
	now := s.nowMS()
	r := &Record{
		State:       StateReady,
		ContentType: NormalizeContentType(f.ContentType),
		Size:        sp.Size,
		SHA256:      sp.SHA256,
		CreatedMS:   now,
		UploadedMS:  now,
		// Media cached while the legacy endpoints are frozen is "new" for
		// them, as the spec says of remote media.
		Legacy:     s.cfg.LegacyUnauthenticated,
		ServerName: server,
		MediaID:    mediaID,
		version:    1,
	}
	if CheckFilename(f.Filename) == nil {
		r.Filename = f.Filename
	}
	if isImageType(r.ContentType) {
		if info, err := probeImage(sp.file()); err == nil {
			r.Image = info
		}
	}
	if r.Blob, err = s.storeBlob(ctx, sp, r.ContentType); err != nil {
		return nil, err
	}
	return r, nil
}

// thumbRecord is a cached remote thumbnail.
type thumbRecord struct {
	ContentType string `json:"content_type"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"`
	Blob        string `json:"blob"`
	Legacy      bool   `json:"legacy,omitempty"`
}

func boxName(b Box, animated bool) string {
	name := fmt.Sprintf("%s-%dx%d", b.Method, b.W, b.H)
	if animated {
		name += "-animated"
	}
	return name
}

// RemoteThumbnail returns a thumbnail of remote media for a request of w×h
// by method. When the original is already cached here and is an image this
// server can thumbnail, the thumbnail is made from it exactly as for local
// media (Thumbnail): no request leaves the server. Otherwise it is the
// remote server's thumbnail for the box Cirrus would pick (ChooseBox),
// fetched once and cached per box. legacy asks for the deprecated
// unauthenticated endpoints' rules (the freeze).
func (s *Service) RemoteThumbnail(ctx context.Context, server, mediaID string, w, h int, method string, animated bool, wait time.Duration, allowRemote, legacy bool) (*Content, error) {
	if err := CheckAddress(server, mediaID); err != nil {
		return nil, err
	}
	if c, ok, err := s.thumbnailFromCache(ctx, server, mediaID, w, h, method, animated, legacy); ok || err != nil {
		return c, err
	}
	b := ChooseBox(w, h, method)
	name := boxName(b, animated)
	key := table.Key{PK: recordKey(server, mediaID).PK, SK: "thumb#" + name}
	var tr *thumbRecord
	cached := func() (bool, error) {
		it, err := s.t.Get(ctx, key)
		if errors.Is(err, table.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		var r thumbRecord
		if err := json.Unmarshal(it.Data, &r); err != nil {
			return false, fmt.Errorf("media: corrupt thumbnail record %s %s: %w", key.PK, key.SK, err)
		}
		tr = &r
		return true, nil
	}
	ok, err := cached()
	if err != nil {
		return nil, err
	}
	if !ok {
		if !allowRemote {
			return nil, httpapi.NotFound("media is remote and allow_remote is false")
		}
		if s.fetcher == nil {
			return nil, ErrRemoteUnavailable
		}
		lk := table.Key{PK: key.PK, SK: "fetch#" + name}
		err = s.singleFetch(ctx, lk, cached, func() error {
			f, err := s.fetcher.FetchMedia(ctx, RemoteRequest{Server: server, MediaID: mediaID, Thumb: &b, Animated: animated,
				Wait: wait, MaxBytes: s.cfg.MaxUploadBytes})
			if err != nil {
				return err
			}
			defer f.Body.Close()
			r, err := s.cacheRemote(ctx, server, mediaID, f)
			if err != nil {
				return err
			}
			data, err := json.Marshal(thumbRecord{ContentType: r.ContentType, Size: r.Size, SHA256: r.SHA256, Blob: r.Blob, Legacy: r.Legacy})
			if err != nil {
				return err
			}
			err = s.t.Put(ctx, table.Item{PK: key.PK, SK: key.SK, Data: data, Version: 1}, table.IfNotExists())
			if err != nil && !errors.Is(err, table.ErrConditionFailed) {
				return err
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if legacy && !s.cfg.LegacyUnauthenticated && !tr.Legacy {
		return nil, httpapi.NotFound("media not found: use the authenticated endpoints under /_matrix/client/v1/media")
	}
	return &Content{Key: tr.Blob, Size: tr.Size, ContentType: tr.ContentType, Filename: thumbName(tr.ContentType),
		ETag: `"` + tr.SHA256 + `"`}, nil
}

// thumbnailFromCache makes a thumbnail of remote media from its cached
// original, when there is one and it is an image within the decoding
// limit. ok is false when the caller should ask the remote server instead:
// nothing cached, not an image Cirrus decodes, or the local attempt failed
// on the image itself (the remote may still manage, e.g. a format its
// decoder knows).
func (s *Service) thumbnailFromCache(ctx context.Context, server, mediaID string, w, h int, method string, animated, legacy bool) (c *Content, ok bool, err error) {
	rec, err := s.get(ctx, server, mediaID)
	if errors.Is(err, table.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	if !s.Thumbnailable(rec) {
		return nil, false, nil
	}
	if legacy && !s.LegacyAllowed(rec) {
		return nil, true, httpapi.NotFound("media not found: use the authenticated endpoints under /_matrix/client/v1/media")
	}
	c, err = s.Thumbnail(ctx, rec, w, h, method, animated)
	if err != nil {
		if e, known := httpapi.AsError(err); known && e.Status < 500 && ctx.Err() == nil {
			s.log.Debug("media: no thumbnail from the cached original; asking its server", "media", rec.MXC(), "err", err)
			return nil, false, nil
		}
		return nil, true, err
	}
	return c, true, nil
}
