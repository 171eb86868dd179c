package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/ephemeral"
	"github.com/cirrus-matrix/cirrus/core/filter"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/userdata"
)

// UserDataAPI serves what users keep on the server about themselves and
// the ephemeral room data: filters, account data, tags, presence, typing,
// receipts, read markers and send-to-device.
type UserDataAPI struct {
	ServerName string
	UserData   *userdata.Service
	Ephemeral  *ephemeral.Service
	Rooms      *rooms.Service
}

// selfParam reads the {userId} path parameter, which must be the caller.
func selfParam(r *httpapi.Request, what string) (id.UserID, error) {
	u := id.UserID(r.PathValue("userId"))
	if !validUserID(u) {
		return "", httpapi.InvalidParam("invalid user ID %q", u)
	}
	if u != r.Caller.UserID {
		return "", httpapi.Forbidden("cannot %s for other users", what)
	}
	return u, nil
}

// ---- filters ----

// PostFilter serves POST /user/{userId}/filter.
func (a *UserDataAPI) PostFilter(r *httpapi.Request) (any, error) {
	u, err := selfParam(r, "create filters")
	if err != nil {
		return nil, err
	}
	var obj map[string]json.RawMessage
	if err := r.DecodeJSON(&obj); err != nil {
		return nil, err
	}
	body, _ := r.Body()
	if _, err := filter.Parse(body); err != nil {
		return nil, filterError(err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, body); err != nil {
		return nil, httpapi.NotJSON("filter is not valid JSON")
	}
	fid, err := a.UserData.PutFilter(r.Ctx(), u, compact.Bytes())
	if err != nil {
		return nil, err
	}
	return map[string]string{"filter_id": fid}, nil
}

func filterError(err error) error {
	var fe *filter.Error
	if errors.As(err, &fe) && fe.BadJSON {
		return httpapi.BadJSON("%s", fe.Msg)
	}
	return httpapi.InvalidParam("%v", err)
}

// GetFilter serves GET /user/{userId}/filter/{filterId}.
func (a *UserDataAPI) GetFilter(r *httpapi.Request) (any, error) {
	u, err := selfParam(r, "read filters")
	if err != nil {
		return nil, err
	}
	f, err := a.UserData.GetFilter(r.Ctx(), u, r.PathValue("filterId"))
	if err != nil {
		return nil, err
	}
	if f == nil {
		return nil, httpapi.NotFound("no such filter")
	}
	return f, nil
}

// ---- account data ----

// adType reads and checks the {type} path parameter.
func adType(r *httpapi.Request) (string, error) {
	t := r.PathValue("type")
	if !validEventType(t) {
		return "", httpapi.InvalidParam("invalid account data type")
	}
	return t, nil
}

// adRoom reads the optional {roomId} path parameter.
func adRoom(r *httpapi.Request) (id.RoomID, error) {
	if r.PathValue("roomId") == "" {
		return "", nil
	}
	return roomIDParam(r)
}

// adParams reads the owner, optional room and type of an account data path.
func adParams(r *httpapi.Request, what string) (id.UserID, id.RoomID, string, error) {
	u, err := selfParam(r, what)
	if err != nil {
		return "", "", "", err
	}
	room, err := adRoom(r)
	if err != nil {
		return "", "", "", err
	}
	typ, err := adType(r)
	return u, room, typ, err
}

// PutAccountData serves PUT /user/{userId}/account_data/{type} and
// /user/{userId}/rooms/{roomId}/account_data/{type}.
func (a *UserDataAPI) PutAccountData(r *httpapi.Request) (any, error) {
	u, room, typ, err := adParams(r, "add account data")
	if err != nil {
		return nil, err
	}
	if typ == userdata.TypeFullyRead || typ == userdata.TypePushRules {
		return nil, &httpapi.Error{Status: http.StatusMethodNotAllowed, Code: "M_BAD_JSON",
			Message: "cannot set " + typ + " through this API: the server manages it"}
	}
	c, err := decodeContent(r)
	if err != nil {
		return nil, err
	}
	if typ == userdata.TypeIgnoredList && room == "" {
		if err := checkIgnoredList(c, u); err != nil {
			return nil, err
		}
	}
	if typ == userdata.TypeTags && room != "" {
		if err := checkTags(c); err != nil {
			return nil, err
		}
	}
	if err := a.UserData.Set(r.Ctx(), u, room, typ, c); err != nil {
		return nil, err
	}
	return httpapi.Empty{}, nil
}

func checkIgnoredList(c json.RawMessage, me id.UserID) error {
	var l struct {
		Ignored *map[id.UserID]json.RawMessage `json:"ignored_users"`
	}
	if err := json.Unmarshal(c, &l); err != nil {
		return httpapi.BadJSON("ignored_users must be an object of user IDs")
	}
	if l.Ignored != nil {
		for u := range *l.Ignored {
			if !validUserID(u) {
				return httpapi.InvalidParam("%q in ignored_users is not a user ID", u)
			}
			if u == me {
				return httpapi.InvalidParam("you cannot ignore yourself")
			}
		}
	}
	return nil
}

func checkTags(c json.RawMessage) error {
	var t struct {
		Tags map[string]json.RawMessage `json:"tags"`
	}
	if err := json.Unmarshal(c, &t); err != nil {
		return httpapi.BadJSON("m.tag content must have a tags object")
	}
	for name, info := range t.Tags {
		if err := checkTag(name, info); err != nil {
			return err
		}
	}
	return nil
}

func checkTag(name string, info json.RawMessage) error {
	if name == "" || len(name) > 255 {
		return httpapi.InvalidParam("tag names are 1 to 255 bytes")
	}
	var ti struct {
		Order *float64 `json:"order"`
	}
	if len(bytes.TrimSpace(info)) == 0 || bytes.TrimSpace(info)[0] != '{' || json.Unmarshal(info, &ti) != nil {
		return httpapi.BadJSON("tag %q: the tag must be an object whose order is a number", name)
	}
	return nil
}

// GetAccountData serves GET /user/{userId}/account_data/{type} and the
// room variant.
func (a *UserDataAPI) GetAccountData(r *httpapi.Request) (any, error) {
	u, room, typ, err := adParams(r, "read account data")
	if err != nil {
		return nil, err
	}
	c, err := a.UserData.Get(r.Ctx(), u, room, typ)
	if err != nil {
		return nil, err
	}
	if c == nil {
		return nil, httpapi.NotFound("no account data of type %s", typ)
	}
	return c, nil
}

// ---- tags ----

// GetTags serves GET /user/{userId}/rooms/{roomId}/tags.
func (a *UserDataAPI) GetTags(r *httpapi.Request) (any, error) {
	u, err := selfParam(r, "read tags")
	if err != nil {
		return nil, err
	}
	room, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	tags, err := a.UserData.Tags(r.Ctx(), u, room)
	if err != nil {
		return nil, err
	}
	return map[string]any{"tags": tags}, nil
}

func tagParams(r *httpapi.Request, what string) (id.UserID, id.RoomID, string, error) {
	u, err := selfParam(r, what)
	if err != nil {
		return "", "", "", err
	}
	room, err := roomIDParam(r)
	if err != nil {
		return "", "", "", err
	}
	tag := r.PathValue("tag")
	if tag == "" || len(tag) > 255 {
		return "", "", "", httpapi.InvalidParam("tag names are 1 to 255 bytes")
	}
	return u, room, tag, nil
}

// PutTag serves PUT /user/{userId}/rooms/{roomId}/tags/{tag}.
func (a *UserDataAPI) PutTag(r *httpapi.Request) (any, error) {
	u, room, tag, err := tagParams(r, "set tags")
	if err != nil {
		return nil, err
	}
	c, err := decodeContent(r)
	if err != nil {
		return nil, err
	}
	if err := checkTag(tag, c); err != nil {
		return nil, err
	}
	if err := a.UserData.SetTag(r.Ctx(), u, room, tag, c); err != nil {
		return nil, err
	}
	return httpapi.Empty{}, nil
}

// DeleteTag serves DELETE /user/{userId}/rooms/{roomId}/tags/{tag}.
func (a *UserDataAPI) DeleteTag(r *httpapi.Request) (any, error) {
	u, room, tag, err := tagParams(r, "remove tags")
	if err != nil {
		return nil, err
	}
	if err := a.UserData.DeleteTag(r.Ctx(), u, room, tag); err != nil {
		return nil, err
	}
	return httpapi.Empty{}, nil
}

// ---- presence ----

// PutPresence serves PUT /presence/{userId}/status.
func (a *UserDataAPI) PutPresence(r *httpapi.Request) (any, error) {
	u, err := selfParam(r, "set presence")
	if err != nil {
		return nil, err
	}
	var body struct {
		Presence  *string `json:"presence"`
		StatusMsg *string `json:"status_msg"`
	}
	if err := r.DecodeJSON(&body); err != nil {
		return nil, err
	}
	if body.Presence == nil {
		return nil, httpapi.MissingParam("presence is required")
	}
	if !userdata.ValidPresence(*body.Presence) {
		return nil, httpapi.InvalidParam("presence must be online, unavailable or offline")
	}
	if body.StatusMsg != nil && len(*body.StatusMsg) > 1024 {
		return nil, httpapi.InvalidParam("status_msg is too long")
	}
	if err := a.UserData.SetPresence(r.Ctx(), u, *body.Presence, body.StatusMsg); err != nil {
		return nil, err
	}
	return httpapi.Empty{}, nil
}

// GetPresence serves GET /presence/{userId}/status: the caller's own, or
// that of a user who shares a room with them.
func (a *UserDataAPI) GetPresence(r *httpapi.Request) (any, error) {
	u := id.UserID(r.PathValue("userId"))
	if !validUserID(u) {
		return nil, httpapi.InvalidParam("invalid user ID %q", u)
	}
	if u != r.Caller.UserID {
		ok, err := a.shareRoom(r.Ctx(), r.Caller.UserID, u)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, httpapi.Forbidden("you do not share a room with %s", u)
		}
	}
	return a.UserData.Presence(r.Ctx(), u)
}

// shareRoom reports whether both users are joined to one room.
func (a *UserDataAPI) shareRoom(ctx context.Context, x, y id.UserID) (bool, error) {
	mx, err := a.Rooms.UserRooms(ctx, x)
	if err != nil {
		return false, err
	}
	for _, m := range mx {
		if m.Membership != "join" {
			continue
		}
		other, err := a.Rooms.Membership(ctx, m.RoomID, y)
		if err != nil {
			return false, err
		}
		if other == "join" {
			return true, nil
		}
	}
	return false, nil
}
