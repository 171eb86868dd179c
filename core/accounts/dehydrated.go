package accounts

import (
	"context"
	"errors"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// NewDeviceOps returns the operations that add a device with no access
// token (a dehydrated device, MSC3814: it exists for other users to encrypt
// to, and no client ever logs in as it). The put fails its condition if
// the user already has a device with that id.
func (s *Service) NewDeviceOps(u id.UserID, d id.DeviceID, name string) []table.Op {
	dev := &Device{ID: d, DisplayName: name, CreatedMS: s.now().UnixMilli()}
	return []table.Op{table.Put(s.deviceItem(u, dev, 1), table.IfNotExists())}
}

// DeviceExists reports whether the user has the device.
func (s *Service) DeviceExists(ctx context.Context, u id.UserID, d id.DeviceID) (bool, error) {
	_, err := s.GetDevice(ctx, u, d)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, table.ErrNotFound) {
		return false, nil
	}
	return false, err
}
