// Package dehydrated keeps each user's dehydrated device (MSC3814): a
// device whose private keys the client stores encrypted on the server, so
// that messages encrypted while the user has no device logged in can be
// read by the next device that rehydrates it.
//
// The device is an ordinary device of the account (listed, its keys
// published, to-device messages queued in its inbox) that no client logs in
// as; beside it one record names it:
//
//	user#<@u> / dehydrated   d = {device_id, device_data}, v
//
// Uploading a new one replaces the record (IfVersion) in the transaction
// that creates the new device, then deletes the old device with its keys
// and inbox.
package dehydrated

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/accounts"
	"github.com/cirrus-matrix/cirrus/core/ephemeral"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/keys"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// DefaultDisplayName names a dehydrated device uploaded without a name.
const DefaultDisplayName = "Dehydrated device"

// MaxEventsPerBatch is how many to-device messages one events call returns.
const MaxEventsPerBatch = 100

// Service stores dehydrated devices.
type Service struct {
	T        table.Table
	Accounts *accounts.Service
	Keys     *keys.Service
	Inbox    *ephemeral.Service
}

// Record is a user's dehydrated device as GET returns it.
type Record struct {
	DeviceID   id.DeviceID     `json:"device_id"`
	DeviceData json.RawMessage `json:"device_data"`
}

func recordKey(u id.UserID) table.Key { return table.Key{PK: "user#" + string(u), SK: "dehydrated"} }

// Upload is the body of PUT /dehydrated_device.
type Upload struct {
	DeviceID    id.DeviceID     `json:"device_id"`
	DeviceData  json.RawMessage `json:"device_data"`
	DisplayName *string         `json:"initial_device_display_name"`
	keys.UploadRequest
}

// check validates an upload.
func (up *Upload) check() error {
	if up.DeviceID == "" {
		return httpapi.MissingParam("device_id is required")
	}
	if len(up.DeviceID) > 255 || !validDeviceID(string(up.DeviceID)) {
		return httpapi.InvalidParam("device_id is not a valid device id")
	}
	var data map[string]json.RawMessage
	if json.Unmarshal(up.DeviceData, &data) != nil || data == nil {
		return httpapi.MissingParam("device_data must be an object")
	}
	var alg string
	if json.Unmarshal(data["algorithm"], &alg) != nil || alg == "" {
		return httpapi.MissingParam("device_data.algorithm is required")
	}
	if len(up.DeviceKeys) == 0 || string(up.DeviceKeys) == "null" {
		return httpapi.MissingParam("device_keys is required")
	}
	if up.DisplayName != nil && len(*up.DisplayName) > 1000 {
		return httpapi.InvalidParam("initial_device_display_name is too long")
	}
	return nil
}

// validDeviceID refuses control characters (device ids end up in sort keys).
func validDeviceID(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// load reads the record and checks that its device still exists (it can be
// deleted through the ordinary device endpoints). ok=false if there is none.
func (s *Service) load(ctx context.Context, u id.UserID) (rec Record, it table.Item, ok bool, err error) {
	it, err = s.T.Get(ctx, recordKey(u))
	if errors.Is(err, table.ErrNotFound) {
		return rec, it, false, nil
	}
	if err != nil {
		return rec, it, false, err
	}
	if err := json.Unmarshal(it.Data, &rec); err != nil {
		return rec, it, false, err
	}
	exists, err := s.Accounts.DeviceExists(ctx, u, rec.DeviceID)
	return rec, it, exists, err
}

// Put stores a new dehydrated device for u, replacing any previous one.
func (s *Service) Put(ctx context.Context, u id.UserID, up *Upload) (id.DeviceID, error) {
	if err := up.check(); err != nil {
		return "", err
	}
	old, it, hadOld, err := s.load(ctx, u)
	if err != nil {
		return "", err
	}
	recCond, version := table.IfNotExists(), int64(1)
	if it.PK != "" {
		recCond, version = table.IfVersion(it.Version), it.Version+1
	}
	if hadOld && old.DeviceID == up.DeviceID {
		// The same device again: replace it whole.
		if err := s.removeDevice(ctx, u, old.DeviceID); err != nil {
			return "", err
		}
		hadOld = false
	}
	name := DefaultDisplayName
	if up.DisplayName != nil {
		name = *up.DisplayName
	}
	data, _ := json.Marshal(Record{DeviceID: up.DeviceID, DeviceData: up.DeviceData})
	rk := recordKey(u)
	ops := append(s.Accounts.NewDeviceOps(u, up.DeviceID, name),
		table.Put(table.Item{PK: rk.PK, SK: rk.SK, Data: data, Version: version}, recCond))
	err = s.T.Transact(ctx, ops)
	var txe *table.TxError
	switch {
	case errors.As(err, &txe) && txe.Index == 0:
		return "", httpapi.InvalidParam("device id %s is already in use", up.DeviceID)
	case errors.As(err, &txe):
		return "", &httpapi.Error{Status: 409, Code: "M_UNKNOWN", Message: "another dehydrated device was uploaded at the same time"}
	case err != nil:
		return "", err
	}
	if _, err := s.Keys.Upload(ctx, u, up.DeviceID, &up.UploadRequest); err != nil {
		// Bad keys: the device must not stay without them.
		_ = s.removeDevice(ctx, u, up.DeviceID)
		_ = s.T.Delete(ctx, rk, table.IfVersion(version))
		return "", err
	}
	if hadOld {
		if err := s.removeDevice(ctx, u, old.DeviceID); err != nil {
			return "", err
		}
	}
	return up.DeviceID, nil
}

// removeDevice deletes a device, its keys and its to-device inbox.
func (s *Service) removeDevice(ctx context.Context, u id.UserID, d id.DeviceID) error {
	if err := s.Accounts.DeleteDevice(ctx, u, d); err != nil {
		return err
	}
	if err := s.Keys.DeleteDeviceKeys(ctx, u, []id.DeviceID{d}); err != nil {
		return err
	}
	if s.Inbox != nil {
		inbox := s.Inbox.ToDeviceStream(u, d)
		latest, err := inbox.Latest(ctx)
		if err != nil {
			return err
		}
		if _, err := s.Inbox.AckToDevice(ctx, u, d, latest); err != nil {
			return err
		}
	}
	return nil
}

// Get returns u's dehydrated device (M_NOT_FOUND if none).
func (s *Service) Get(ctx context.Context, u id.UserID) (*Record, error) {
	rec, _, ok, err := s.load(ctx, u)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, httpapi.NotFound("no dehydrated device")
	}
	return &rec, nil
}

// Delete removes u's dehydrated device and returns its id.
func (s *Service) Delete(ctx context.Context, u id.UserID) (id.DeviceID, error) {
	rec, it, ok, err := s.load(ctx, u)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", httpapi.NotFound("no dehydrated device")
	}
	if err := s.T.Delete(ctx, recordKey(u), table.IfVersion(it.Version)); err != nil {
		if errors.Is(err, table.ErrConditionFailed) {
			return "", httpapi.NotFound("the dehydrated device was replaced meanwhile")
		}
		return "", err
	}
	return rec.DeviceID, s.removeDevice(ctx, u, rec.DeviceID)
}

// Events returns to-device messages of u's dehydrated device d after the
// position in nextBatch ("" = from the start). Unlike /sync, nothing is
// deleted: an interrupted rehydration can start over.
func (s *Service) Events(ctx context.Context, u id.UserID, d id.DeviceID, nextBatch string) ([]ephemeral.ToDeviceMessage, string, error) {
	rec, _, ok, err := s.load(ctx, u)
	if err != nil {
		return nil, "", err
	}
	if !ok || rec.DeviceID != d {
		return nil, "", httpapi.Forbidden("%s is not your dehydrated device", d)
	}
	var after int64
	if nextBatch != "" {
		if after, err = strconv.ParseInt(nextBatch, 10, 64); err != nil || after < 0 {
			return nil, "", httpapi.InvalidParam("next_batch is not a token this server issued")
		}
	}
	msgs, next, err := s.Inbox.ToDevice(ctx, u, d, after, MaxEventsPerBatch)
	if err != nil {
		return nil, "", err
	}
	if msgs == nil {
		msgs = []ephemeral.ToDeviceMessage{}
	}
	return msgs, strconv.FormatInt(next, 10), nil
}
