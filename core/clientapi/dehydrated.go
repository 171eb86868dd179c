package clientapi

import (
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/dehydrated"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
)

// DehydratedAPI serves MSC3814's dehydrated device endpoints
// (/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device…).
type DehydratedAPI struct {
	Devices *dehydrated.Service
}

// Put serves PUT …/dehydrated_device.
func (d *DehydratedAPI) Put(r *httpapi.Request) (any, error) {
	if err := noGuests(r); err != nil {
		return nil, err
	}
	var up dehydrated.Upload
	if err := r.DecodeJSON(&up); err != nil {
		return nil, err
	}
	dev, err := d.Devices.Put(r.Ctx(), r.Caller.UserID, &up)
	if err != nil {
		return nil, err
	}
	return map[string]any{"device_id": dev}, nil
}

// Get serves GET …/dehydrated_device.
func (d *DehydratedAPI) Get(r *httpapi.Request) (any, error) {
	return d.Devices.Get(r.Ctx(), r.Caller.UserID)
}

// Delete serves DELETE …/dehydrated_device.
func (d *DehydratedAPI) Delete(r *httpapi.Request) (any, error) {
	dev, err := d.Devices.Delete(r.Ctx(), r.Caller.UserID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"device_id": dev}, nil
}

// Events serves POST …/dehydrated_device/{deviceId}/events (next_batch in
// the body, as Synapse and the clients do) and its GET form (next_batch in
// the query, as the proposal's text has it).
func (d *DehydratedAPI) Events(r *httpapi.Request) (any, error) {
	// The route matches …/dehydrated_device/{rest...}: the device id may
	// contain "/" (see routes.go).
	dev, ok := strings.CutSuffix(r.PathValue("rest"), "/events")
	if !ok || dev == "" {
		return nil, httpapi.Unrecognized("unrecognized request: %s %s", r.Method, r.URL.Path)
	}
	next := r.URL.Query().Get("next_batch")
	if r.Method == "POST" {
		var body struct {
			NextBatch *string `json:"next_batch"`
		}
		if err := r.DecodeOptionalJSON(&body); err != nil {
			return nil, err
		}
		if body.NextBatch != nil {
			next = *body.NextBatch
		}
	}
	msgs, nb, err := d.Devices.Events(r.Ctx(), r.Caller.UserID, id.DeviceID(dev), next)
	if err != nil {
		return nil, err
	}
	return map[string]any{"events": msgs, "next_batch": nb}, nil
}
