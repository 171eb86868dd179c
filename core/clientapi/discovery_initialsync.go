package clientapi

import (
	"slices"
	"strconv"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/userdata"
)

// roomInitialSyncLimit is how many recent events a room initial sync returns.
const roomInitialSyncLimit = 20

// RoomInitialSync serves GET /_matrix/client/v3/rooms/{roomId}/initialSync
// (kept by the spec for peeking): the room's state and latest events as
// /rooms/{roomId}/state and /messages give them to the caller — for a
// member the current ones, for a former member those up to their leaving,
// for anyone the events of a world-readable room — with the caller's room
// account data and the room's directory visibility.
func (a *DiscoveryAPI) RoomInitialSync(r *httpapi.Request) (any, error) {
	room, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	state, err := a.RoomsAPI.GetState(r) // checks that the caller may read the room
	if err != nil {
		return nil, err
	}
	// The latest events: /messages backward from the end, put in order.
	back := *r
	back.Request = r.Request.Clone(r.Ctx())
	back.URL.RawQuery = "dir=b&limit=" + strconv.Itoa(roomInitialSyncLimit)
	page, err := a.RoomsAPI.Messages(&back)
	if err != nil {
		return nil, err
	}
	pm, _ := page.(map[string]any)
	chunk, _ := pm["chunk"].([]rooms.ClientEvent)
	chunk = slices.Clone(chunk)
	slices.Reverse(chunk)
	if chunk == nil {
		chunk = []rooms.ClientEvent{}
	}
	messages := map[string]any{"chunk": chunk, "end": pm["start"]}
	if earlier, ok := pm["end"]; ok {
		messages["start"] = earlier
	}
	membership, err := a.Rooms.Membership(r.Ctx(), room, r.Caller.UserID)
	if err != nil {
		return nil, err
	}
	public, err := a.Rooms.DirectoryVisibility(r.Ctx(), room)
	if err != nil {
		return nil, err
	}
	visibility := "private"
	if public {
		visibility = "public"
	}
	all, err := (&userdata.Service{T: a.T}).All(r.Ctx(), r.Caller.UserID)
	if err != nil {
		return nil, err
	}
	accountData := []map[string]any{}
	for _, ad := range all {
		if ad.RoomID == room {
			accountData = append(accountData, map[string]any{"type": ad.Type, "content": ad.Content})
		}
	}
	out := map[string]any{
		"room_id": room, "messages": messages, "state": state,
		"visibility": visibility, "account_data": accountData,
	}
	if membership != "" {
		out["membership"] = membership
	}
	return out, nil
}
