package server

import (
	"encoding/json"
	"net/http"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/accounts"
	h "github.com/cirrus-matrix/cirrus/core/httpapi"
)

// Account locking and suspension (spec: "Account moderation"), applied to
// the route table so that no handler has to remember them. The caller's
// flags come with its access token (accounts.Authenticate), so this costs
// no read.

// lockedAllowed are the routes a locked account may still use.
var lockedAllowed = map[string]bool{
	http.MethodPost + " " + cv3 + "/logout":     true,
	http.MethodPost + " " + cv3 + "/logout/all": true,
}

// suspendedForbidden are the actions a suspended account may not take: the
// spec's recommended list (joining, knocking, invites, sending to rooms,
// profile changes, redacting others' events), plus creating and upgrading
// rooms, which send events as the user. Leaving, redacting one's own
// events, reading, keys, backups, devices and logout stay open.
var suspendedForbidden = map[string]bool{
	http.MethodPost + " " + cv3 + "/createRoom":                                    true,
	http.MethodPost + " " + cv3 + "/join/{roomIdOrAlias}":                          true,
	http.MethodPost + " " + cv3 + "/knock/{roomIdOrAlias}":                         true,
	http.MethodPost + " " + cv3 + "/rooms/{roomId}/join":                           true,
	http.MethodPost + " " + cv3 + "/rooms/{roomId}/invite":                         true,
	http.MethodPost + " " + cv3 + "/rooms/{roomId}/upgrade":                        true,
	http.MethodPut + " " + cv3 + "/rooms/{roomId}/send/{eventType}/{txnId}":        true,
	http.MethodPut + " " + cv3 + "/rooms/{roomId}/state/{eventType}/{stateKey...}": true,
	http.MethodPut + " " + cv3 + "/rooms/{roomId}/state/{eventType}":               true,
	http.MethodPut + " " + cv3 + "/rooms/{roomId}/redact/{eventId}/{txnId}":        true,
	http.MethodPut + " " + cv3 + "/profile/{userId}/{keyName}":                     true,
	http.MethodDelete + " " + cv3 + "/profile/{userId}/{keyName}":                  true,
}

// moderated wraps the handlers of authenticated routes with the lock and
// suspension checks.
func (s *Server) moderated(rs []h.Route) []h.Route {
	out := make([]h.Route, len(rs))
	for i, rt := range rs {
		out[i] = rt
		if rt.Auth != h.AuthRequired && rt.Auth != h.AuthOptional {
			continue
		}
		name := rt.Method + " " + rt.Path
		check := func(r *h.Request) error {
			c := r.Caller
			if c == nil {
				return nil
			}
			if c.Locked && !lockedAllowed[name] {
				return accounts.LockedError()
			}
			if c.Suspended && suspendedForbidden[name] && !s.suspendedMay(r) {
				return accounts.SuspendedError()
			}
			return nil
		}
		if next := rt.Handle; next != nil {
			out[i].Handle = func(r *h.Request) (any, error) {
				if err := check(r); err != nil {
					return nil, err
				}
				return next(r)
			}
		}
		if next := rt.Raw; next != nil {
			out[i].Raw = func(w http.ResponseWriter, r *h.Request) {
				if err := check(r); err != nil {
					h.WriteError(w, err)
					return
				}
				next(w, r)
			}
		}
	}
	return out
}

// suspendedMay lets a suspended user redact their own events (through
// /redact or an m.room.redaction sent with /send).
func (s *Server) suspendedMay(r *h.Request) bool {
	target := id.EventID(r.PathValue("eventId"))
	if target == "" {
		if r.PathValue("eventType") != "m.room.redaction" || r.PathValue("txnId") == "" {
			return false
		}
		var body struct {
			Redacts id.EventID `json:"redacts"`
		}
		b, err := r.Body() // kept: the handler reads it again
		if err != nil || json.Unmarshal(b, &body) != nil {
			return false
		}
		target = body.Redacts
	}
	if target == "" || s.rooms == nil {
		return false
	}
	ev, err := s.rooms.Event(r.Ctx(), target)
	return err == nil && ev.Sender == r.Caller.UserID && ev.RoomID == id.RoomID(r.PathValue("roomId"))
}
