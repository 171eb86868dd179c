package clientapi

import (
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/rooms"
)

// UpgradeRoom serves POST /rooms/{roomId}/upgrade.
func (a *RoomsAPI) UpgradeRoom(r *httpapi.Request) (any, error) {
	room, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		NewVersion         *string     `json:"new_version"`
		AdditionalCreators []id.UserID `json:"additional_creators"`
	}
	if err := r.DecodeJSON(&body); err != nil {
		return nil, err
	}
	if body.NewVersion == nil {
		return nil, httpapi.MissingParam("new_version is required")
	}
	for _, u := range body.AdditionalCreators {
		if !validUserID(u) {
			return nil, httpapi.InvalidParam("invalid user ID %q in additional_creators", u)
		}
	}
	newRoom, err := a.Rooms.UpgradeRoom(r.Ctx(), rooms.UpgradeRequest{Room: room, User: r.Caller.UserID,
		Version: id.RoomVersion(*body.NewVersion), AdditionalCreators: body.AdditionalCreators})
	if err != nil {
		return nil, err
	}
	return map[string]id.RoomID{"replacement_room": newRoom}, nil
}

// reportBody is a report's request body. score was removed from the spec in
// v1.18; older clients still send it, so it is checked and kept.
type reportBody struct {
	Reason *string `json:"reason"`
	Score  *int    `json:"score"`
}

// maxReportReason bounds a report's reason (it is stored for admins).
const maxReportReason = 4096

func (b *reportBody) validate(reasonRequired bool) error {
	if b.Reason == nil && reasonRequired {
		return httpapi.MissingParam("reason is required")
	}
	if b.Reason != nil && len(*b.Reason) > maxReportReason {
		return httpapi.InvalidParam("reason is longer than %d bytes", maxReportReason)
	}
	if b.Score != nil && (*b.Score < -100 || *b.Score > 0) {
		return httpapi.InvalidParam("score must be between -100 and 0")
	}
	return nil
}

func (b *reportBody) reason() string {
	if b.Reason == nil {
		return ""
	}
	return *b.Reason
}

// ReportEvent serves POST /rooms/{roomId}/report/{eventId}: members report
// events they can see; the report is stored for the server's admins.
func (a *RoomsAPI) ReportEvent(r *httpapi.Request) (any, error) {
	room, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	var body reportBody
	if err := r.DecodeJSON(&body); err != nil {
		return nil, err
	}
	if err := body.validate(false); err != nil {
		return nil, err
	}
	ctx, me := r.Ctx(), r.Caller.UserID
	notFound := httpapi.NotFound("the event was not found or you are not joined to the room")
	if m, err := a.Rooms.Membership(ctx, room, me); err != nil {
		return nil, err
	} else if m != "join" {
		return nil, notFound
	}
	ev, err := a.visibleEvent(ctx, room, id.EventID(r.PathValue("eventId")), me)
	if err != nil {
		return nil, notFound
	}
	if _, err := a.Rooms.AddReport(ctx, rooms.Report{RoomID: room, EventID: ev.EventID, Reporter: me,
		Reason: body.reason(), Score: body.Score, Sender: ev.Sender}); err != nil {
		return nil, err
	}
	return httpapi.Empty{}, nil
}

// ReportRoom serves POST /rooms/{roomId}/report (v1.13): anyone may report
// a room this server knows.
func (a *RoomsAPI) ReportRoom(r *httpapi.Request) (any, error) {
	room, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	var body reportBody
	if err := r.DecodeJSON(&body); err != nil {
		return nil, err
	}
	if err := body.validate(true); err != nil {
		return nil, err
	}
	ctx := r.Ctx()
	if _, err := a.Rooms.RoomVersion(ctx, room); err != nil {
		return nil, httpapi.NotFound("the room was not found")
	}
	if _, err := a.Rooms.AddReport(ctx, rooms.Report{RoomID: room, Reporter: r.Caller.UserID, Reason: body.reason(), Score: body.Score}); err != nil {
		return nil, err
	}
	return httpapi.Empty{}, nil
}
