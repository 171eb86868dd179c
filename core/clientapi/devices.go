package clientapi

import (
	"errors"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/accounts"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Limits on device requests.
const (
	maxDeviceNameBytes  = 256
	maxDevicesPerDelete = 1000
)

// deviceInfo is a device as the client API shows it (client_device.yaml).
type deviceInfo struct {
	DeviceID    id.DeviceID `json:"device_id"`
	DisplayName string      `json:"display_name,omitempty"`
	LastSeenIP  string      `json:"last_seen_ip,omitempty"`
	LastSeenTS  int64       `json:"last_seen_ts,omitempty"`
}

func viewDevice(d *accounts.Device) deviceInfo {
	return deviceInfo{DeviceID: d.ID, DisplayName: d.DisplayName, LastSeenIP: d.LastSeenIP, LastSeenTS: d.LastSeenMS}
}

// Devices serves GET /_matrix/client/v3/devices.
func (a *API) Devices(r *httpapi.Request) (any, error) {
	devs, err := a.Accounts.Devices(r.Ctx(), r.Caller.UserID)
	if err != nil {
		return nil, err
	}
	out := make([]deviceInfo, 0, len(devs))
	for i := range devs {
		out = append(out, viewDevice(&devs[i]))
	}
	return map[string]any{"devices": out}, nil
}

// Device serves GET /_matrix/client/v3/devices/{deviceId}.
func (a *API) Device(r *httpapi.Request) (any, error) {
	d, err := a.Accounts.GetDevice(r.Ctx(), r.Caller.UserID, id.DeviceID(r.PathValue("deviceId")))
	if errors.Is(err, table.ErrNotFound) {
		return nil, httpapi.NotFound("no such device")
	}
	if err != nil {
		return nil, err
	}
	return viewDevice(d), nil
}

// UpdateDevice serves PUT /_matrix/client/v3/devices/{deviceId}. Only
// application services may create devices this way; for everyone else an
// unknown device is 404.
func (a *API) UpdateDevice(r *httpapi.Request) (any, error) {
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if err := r.DecodeJSON(&req); err != nil {
		return nil, err
	}
	dev := id.DeviceID(r.PathValue("deviceId"))
	if created, err := a.createAppServiceDevice(r, dev, req.DisplayName); err != nil || created { // appservice.go
		return httpapi.Empty{}, err
	}
	if req.DisplayName == nil {
		// Nothing to change, but the device must still exist.
		if _, err := a.Device(r); err != nil {
			return nil, err
		}
		return httpapi.Empty{}, nil
	}
	if len(*req.DisplayName) > maxDeviceNameBytes {
		return nil, httpapi.InvalidParam("display_name is longer than %d bytes", maxDeviceNameBytes)
	}
	if err := a.Accounts.RenameDevice(r.Ctx(), r.Caller.UserID, dev, *req.DisplayName); err != nil {
		return nil, err
	}
	if a.DeviceKeys != nil {
		if err := a.DeviceKeys.DeviceRenamed(r.Ctx(), r.Caller.UserID, dev); err != nil {
			return nil, err
		}
	}
	return httpapi.Empty{}, nil
}

// DeleteDevice serves DELETE /_matrix/client/v3/devices/{deviceId}, behind
// the password stage. A device that is already gone is a success.
func (a *API) DeleteDevice(r *httpapi.Request) (any, error) {
	var req struct {
		Auth *accounts.AuthDict `json:"auth"`
	}
	// The spec marks the body required, but clients commonly send none on
	// the first (challenge) request, so an empty body is accepted.
	if err := r.DecodeOptionalJSON(&req); err != nil {
		return nil, err
	}
	if err := noGuests(r); err != nil {
		return nil, err
	}
	dev := id.DeviceID(r.PathValue("deviceId"))
	// Application services delete their users' devices without UIA (spec
	// "Device management").
	if r.Caller.AppService == "" {
		if resp, err := a.runPasswordUIA(r, purposeOf("delete_device", string(dev)), req.Auth); resp != nil || err != nil {
			return resp, err
		}
	}
	if err := a.Accounts.DeleteDevice(r.Ctx(), r.Caller.UserID, dev); err != nil {
		return nil, err
	}
	if err := a.dropDeviceKeys(r.Ctx(), r.Caller.UserID, dev); err != nil {
		return nil, err
	}
	return httpapi.Empty{}, nil
}

// DeleteDevices serves POST /_matrix/client/v3/delete_devices, behind the
// password stage (the session is bound to the list of devices).
func (a *API) DeleteDevices(r *httpapi.Request) (any, error) {
	var req struct {
		Devices *[]string          `json:"devices"`
		Auth    *accounts.AuthDict `json:"auth"`
	}
	if err := r.DecodeJSON(&req); err != nil {
		return nil, err
	}
	if req.Devices == nil {
		return nil, httpapi.MissingParam("devices is required")
	}
	if len(*req.Devices) > maxDevicesPerDelete {
		return nil, httpapi.InvalidParam("at most %d devices per request", maxDevicesPerDelete)
	}
	if err := noGuests(r); err != nil {
		return nil, err
	}
	devs := sortedUnique(*req.Devices)
	if r.Caller.AppService == "" { // no UIA for application services
		if resp, err := a.runPasswordUIA(r, purposeOf("delete_devices", devs...), req.Auth); resp != nil || err != nil {
			return resp, err
		}
	}
	ids := make([]id.DeviceID, len(devs))
	for i, d := range devs {
		ids[i] = id.DeviceID(d)
	}
	if err := a.Accounts.DeleteDevices(r.Ctx(), r.Caller.UserID, ids); err != nil {
		return nil, err
	}
	if err := a.dropDeviceKeys(r.Ctx(), r.Caller.UserID, ids...); err != nil {
		return nil, err
	}
	return httpapi.Empty{}, nil
}
