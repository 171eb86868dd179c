package clientapi

import (
	"encoding/json"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/keys"
)

// Server-side key backup endpoints (/room_keys/...). Guests may not keep
// backups (the guest access module does not list these endpoints).

// backupConfig is the body of POST and PUT /room_keys/version.
type backupConfig struct {
	Algorithm *string         `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Version   *string         `json:"version"`
}

func (c *backupConfig) algorithm() string {
	if c.Algorithm == nil {
		return ""
	}
	return *c.Algorithm
}

// CreateBackupVersion serves POST /_matrix/client/v3/room_keys/version.
func (k *KeysAPI) CreateBackupVersion(r *httpapi.Request) (any, error) {
	if err := noGuests(r); err != nil {
		return nil, err
	}
	var req backupConfig
	if err := r.DecodeJSON(&req); err != nil {
		return nil, err
	}
	v, err := k.Keys.CreateBackup(r.Ctx(), r.Caller.UserID, req.algorithm(), req.AuthData)
	if err != nil {
		return nil, err
	}
	return map[string]string{"version": v}, nil
}

// LatestBackupVersion serves GET /_matrix/client/v3/room_keys/version.
func (k *KeysAPI) LatestBackupVersion(r *httpapi.Request) (any, error) {
	if err := noGuests(r); err != nil {
		return nil, err
	}
	return k.Keys.LatestBackup(r.Ctx(), r.Caller.UserID)
}

// GetBackupVersion serves GET /_matrix/client/v3/room_keys/version/{version}.
func (k *KeysAPI) GetBackupVersion(r *httpapi.Request) (any, error) {
	if err := noGuests(r); err != nil {
		return nil, err
	}
	return k.Keys.GetBackup(r.Ctx(), r.Caller.UserID, r.PathValue("version"))
}

// UpdateBackupVersion serves PUT /_matrix/client/v3/room_keys/version/{version}.
func (k *KeysAPI) UpdateBackupVersion(r *httpapi.Request) (any, error) {
	if err := noGuests(r); err != nil {
		return nil, err
	}
	var req backupConfig
	if err := r.DecodeJSON(&req); err != nil {
		return nil, err
	}
	bodyVersion := ""
	if req.Version != nil {
		bodyVersion = *req.Version
	}
	if err := k.Keys.UpdateBackup(r.Ctx(), r.Caller.UserID, r.PathValue("version"), req.algorithm(), req.AuthData, bodyVersion); err != nil {
		return nil, err
	}
	return httpapi.Empty{}, nil
}

// DeleteBackupVersion serves DELETE /_matrix/client/v3/room_keys/version/{version}.
func (k *KeysAPI) DeleteBackupVersion(r *httpapi.Request) (any, error) {
	if err := noGuests(r); err != nil {
		return nil, err
	}
	if err := k.Keys.DeleteBackup(r.Ctx(), r.Caller.UserID, r.PathValue("version")); err != nil {
		return nil, err
	}
	return httpapi.Empty{}, nil
}

// sessionsBody is one room's keys in a request or answer.
type sessionsBody struct {
	Sessions map[id.SessionID]json.RawMessage `json:"sessions"`
}

func roomKeyUploads(room id.RoomID, sessions map[id.SessionID]json.RawMessage, out []keys.RoomKeyUpload) ([]keys.RoomKeyUpload, error) {
	for sid, raw := range sessions {
		key, err := keys.ParseRoomKey(raw)
		if err != nil {
			return nil, err
		}
		out = append(out, keys.RoomKeyUpload{Room: room, Session: sid, Key: key})
	}
	return out, nil
}

// selector reads the room and session of a /room_keys/keys path.
func selector(r *httpapi.Request) keys.RoomKeySelector {
	return keys.RoomKeySelector{Room: id.RoomID(r.PathValue("roomId")), Session: id.SessionID(r.PathValue("sessionId"))}
}

// PutRoomKeys serves PUT /room_keys/keys, /room_keys/keys/{roomId} and
// /room_keys/keys/{roomId}/{sessionId}.
func (k *KeysAPI) PutRoomKeys(r *httpapi.Request) (any, error) {
	if err := noGuests(r); err != nil {
		return nil, err
	}
	sel := selector(r)
	var uploads []keys.RoomKeyUpload
	var err error
	switch {
	case sel.Session != "":
		var raw json.RawMessage
		if err := r.DecodeJSON(&raw); err != nil {
			return nil, err
		}
		key, err := keys.ParseRoomKey(raw)
		if err != nil {
			return nil, err
		}
		uploads = []keys.RoomKeyUpload{{Room: sel.Room, Session: sel.Session, Key: key}}
	case sel.Room != "":
		var req sessionsBody
		if err := r.DecodeJSON(&req); err != nil {
			return nil, err
		}
		if req.Sessions == nil {
			return nil, httpapi.MissingParam("sessions is required")
		}
		if uploads, err = roomKeyUploads(sel.Room, req.Sessions, nil); err != nil {
			return nil, err
		}
	default:
		var req struct {
			Rooms map[id.RoomID]sessionsBody `json:"rooms"`
		}
		if err := r.DecodeJSON(&req); err != nil {
			return nil, err
		}
		if req.Rooms == nil {
			return nil, httpapi.MissingParam("rooms is required")
		}
		for room, body := range req.Rooms {
			if uploads, err = roomKeyUploads(room, body.Sessions, uploads); err != nil {
				return nil, err
			}
		}
	}
	return k.Keys.PutRoomKeys(r.Ctx(), r.Caller.UserID, r.URL.Query().Get("version"), uploads)
}

// GetRoomKeys serves GET on the three /room_keys/keys paths.
func (k *KeysAPI) GetRoomKeys(r *httpapi.Request) (any, error) {
	if err := noGuests(r); err != nil {
		return nil, err
	}
	sel := selector(r)
	got, err := k.Keys.RoomKeys(r.Ctx(), r.Caller.UserID, r.URL.Query().Get("version"), sel)
	if err != nil {
		return nil, err
	}
	switch {
	case sel.Session != "":
		key, ok := got[sel.Room][sel.Session]
		if !ok {
			return nil, httpapi.NotFound("no key for this session in the backup")
		}
		return key, nil
	case sel.Room != "":
		sessions := got[sel.Room]
		if sessions == nil {
			sessions = map[id.SessionID]json.RawMessage{}
		}
		return sessionsBody{Sessions: sessions}, nil
	}
	rooms := make(map[id.RoomID]sessionsBody, len(got))
	for room, sessions := range got {
		rooms[room] = sessionsBody{Sessions: sessions}
	}
	return map[string]any{"rooms": rooms}, nil
}

// DeleteRoomKeys serves DELETE on the three /room_keys/keys paths.
func (k *KeysAPI) DeleteRoomKeys(r *httpapi.Request) (any, error) {
	if err := noGuests(r); err != nil {
		return nil, err
	}
	return k.Keys.DeleteRoomKeys(r.Ctx(), r.Caller.UserID, r.URL.Query().Get("version"), selector(r))
}
