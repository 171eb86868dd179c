package media

import (
	"context"
	"errors"
	"net/http"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/blob"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/resources"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Uploads that bypass this process (MSC3870, as mautrix-go's client speaks
// it): /create also answers com.beeper.msc3870.upload_url, a presigned PUT
// of the blob store for incoming/<mediaId>; the client PUTs the bytes there
// and then calls POST /_matrix/media/unstable/com.beeper.msc3870/upload/
// {serverName}/{mediaId}/complete, which reads the object back, checks it
// like any upload (size limit, hash, image facts), stores it under its
// content key and deletes the incoming object. A Lambda function never
// carries the bytes, so the size limit is MaxUploadBytes, not the payload
// limit. The URL cannot bound the length (S3 signs only an exact one), so
// an oversized object is deleted at completion; objects never completed
// are expired by the bucket's lifecycle rule on incoming/ (template.yaml,
// from core/resources).

// uploadTTLMax is the longest a presigned URL may live (S3: 7 days).
const uploadTTLMax = 7 * 24 * time.Hour

func incomingKey(mediaID string) string { return resources.MediaIncomingPrefix + mediaID }

// uploadURL presigns the PUT for a reservation, valid until it expires.
func (s *Service) uploadURL(ctx context.Context, r *Record) (string, error) {
	ttl := min(time.Duration(r.ExpiresMS-s.nowMS())*time.Millisecond, uploadTTLMax)
	u, err := s.blobs.PresignPut(ctx, incomingKey(r.MediaID), -1, "", max(ttl, time.Minute))
	if errors.Is(err, blob.ErrNoPresign) {
		return "", nil
	}
	return u, err
}

var errNothingUploaded = &httpapi.Error{Status: http.StatusBadRequest, Code: "M_UNKNOWN",
	Message: "nothing has been uploaded to the upload URL yet"}

// CompleteUpload finishes an upload made to the MSC3870 upload URL of
// server/mediaID (the user's own reservation) and returns its record.
func (s *Service) CompleteUpload(ctx context.Context, user id.UserID, server, mediaID, filename string) (*Record, error) {
	if err := CheckAddress(server, mediaID); err != nil {
		return nil, err
	}
	if err := CheckFilename(filename); err != nil {
		return nil, err
	}
	if server != s.cfg.ServerName {
		return nil, httpapi.NotFound("unknown media id: it was not created on this server")
	}
	r, err := s.get(ctx, server, mediaID)
	if errors.Is(err, table.ErrNotFound) {
		return nil, httpapi.NotFound("unknown media id: never created, or expired")
	}
	if err != nil {
		return nil, err
	}
	if r.Uploader != user {
		return nil, httpapi.Forbidden("this media id was created by another user")
	}
	if r.State != StatePending {
		return nil, errCannotOverwrite
	}
	key := incomingKey(mediaID)
	info, err := s.blobs.Head(ctx, key)
	if errors.Is(err, blob.ErrNotFound) {
		return nil, errNothingUploaded
	}
	if err != nil {
		return nil, err
	}
	if info.Size > s.cfg.MaxUploadBytes {
		_ = s.blobs.Delete(ctx, key)
		return nil, tooLarge(s.cfg.MaxUploadBytes)
	}
	rc, _, err := s.blobs.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if err := s.StoreAt(ctx, user, server, mediaID, Upload{Body: rc, Declared: info.Size, ContentType: info.ContentType, Filename: filename}); err != nil {
		return nil, err
	}
	if err := s.blobs.Delete(ctx, key); err != nil {
		s.log.Warn("media: could not delete a completed upload's incoming object", "key", key, "err", err)
	}
	return s.get(ctx, server, mediaID)
}
