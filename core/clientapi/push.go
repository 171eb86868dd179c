package clientapi

import (
	"encoding/json"
	"strconv"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/ephemeral"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/push"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// PushAPI serves the push rules and notifications endpoints.
type PushAPI struct {
	Rules     *push.Rules
	Pushers   *push.Pushers
	T         table.Table
	Rooms     *rooms.Service
	Ephemeral *ephemeral.Service
}

// pushPath is a parsed /pushrules/{path...}: scope "global", then kind,
// rule id and attribute ("", "enabled" or "actions"), each possibly empty.
type pushPath struct {
	parts []string
}

func parsePushPath(r *httpapi.Request) pushPath {
	p := r.PathValue("path")
	if p == "" {
		return pushPath{}
	}
	return pushPath{parts: strings.Split(p, "/")}
}

// rule returns kind, rule id and attribute of a path naming one rule.
func (p pushPath) rule() (kind, ruleID, attr string, err error) {
	n := len(p.parts)
	if n < 3 || n > 4 || p.parts[0] != "global" {
		return "", "", "", httpapi.Unrecognized("unrecognized push rules path")
	}
	kind, ruleID = p.parts[1], p.parts[2]
	if n == 4 {
		attr = p.parts[3]
		if attr != "enabled" && attr != "actions" {
			return "", "", "", httpapi.Unrecognized("unrecognized push rule attribute %q", attr)
		}
	}
	if !push.ValidKind(kind) {
		return "", "", "", httpapi.InvalidParam("unknown push rule kind %q", kind)
	}
	if ruleID == "" {
		return "", "", "", httpapi.InvalidParam("missing push rule id")
	}
	return kind, ruleID, attr, nil
}

// GetPushRules serves GET /pushrules/, /pushrules/global/ and one rule or
// one of its attributes.
func (a *PushAPI) GetPushRules(r *httpapi.Request) (any, error) {
	p := parsePushPath(r)
	rs, err := a.Rules.Get(r.Ctx(), r.Caller.UserID)
	if err != nil {
		return nil, err
	}
	switch {
	case len(p.parts) == 0 || (len(p.parts) == 1 && p.parts[0] == ""):
		return map[string]any{"global": rs}, nil
	case p.parts[0] == "global" && (len(p.parts) == 1 || (len(p.parts) == 2 && p.parts[1] == "")):
		return rs, nil
	}
	kind, ruleID, attr, err := p.rule()
	if err != nil {
		return nil, err
	}
	rule := rs.Find(kind, ruleID)
	if rule == nil {
		return nil, httpapi.NotFound("the push rule was not found")
	}
	switch attr {
	case "enabled":
		return map[string]bool{"enabled": rule.Enabled}, nil
	case "actions":
		return map[string]any{"actions": rule.Actions}, nil
	}
	return rule, nil
}

// PutPushRule serves PUT /pushrules/global/{kind}/{ruleId} and its
// /enabled and /actions.
func (a *PushAPI) PutPushRule(r *httpapi.Request) (any, error) {
	kind, ruleID, attr, err := parsePushPath(r).rule()
	if err != nil {
		return nil, err
	}
	u := r.Caller.UserID
	switch attr {
	case "enabled":
		var body struct {
			Enabled *bool `json:"enabled"`
		}
		if err := r.DecodeJSON(&body); err != nil {
			return nil, err
		}
		if body.Enabled == nil {
			return nil, httpapi.MissingParam("missing enabled")
		}
		return struct{}{}, a.Rules.SetEnabled(r.Ctx(), u, kind, ruleID, *body.Enabled)
	case "actions":
		var body struct {
			Actions *[]json.RawMessage `json:"actions"`
		}
		if err := r.DecodeJSON(&body); err != nil {
			return nil, err
		}
		if body.Actions == nil {
			return nil, httpapi.MissingParam("missing actions")
		}
		if err := push.ValidateActions(*body.Actions); err != nil {
			return nil, err
		}
		return struct{}{}, a.Rules.SetActions(r.Ctx(), u, kind, ruleID, *body.Actions)
	}
	if strings.HasPrefix(ruleID, ".") {
		return nil, httpapi.InvalidParam("rule ids starting with '.' are reserved for server-default rules")
	}
	if strings.ContainsAny(ruleID, `/\`) {
		return nil, httpapi.InvalidParam("rule ids cannot contain slashes or backslashes")
	}
	var body struct {
		Actions    *[]json.RawMessage `json:"actions"`
		Conditions *[]json.RawMessage `json:"conditions"`
		Pattern    *string            `json:"pattern"`
	}
	if err := r.DecodeJSON(&body); err != nil {
		return nil, err
	}
	if body.Actions == nil {
		return nil, httpapi.MissingParam("missing actions")
	}
	if err := push.ValidateActions(*body.Actions); err != nil {
		return nil, err
	}
	rule := &push.Rule{RuleID: ruleID, Enabled: true, Actions: *body.Actions}
	switch kind {
	case "override", "underride":
		conds := []json.RawMessage{}
		if body.Conditions != nil {
			conds = *body.Conditions
		}
		if err := push.ValidateConditions(conds); err != nil {
			return nil, err
		}
		rule.Conditions = &conds
	case "content":
		if body.Pattern == nil || *body.Pattern == "" {
			return nil, httpapi.MissingParam("content rules need a pattern")
		}
		rule.Pattern = body.Pattern
	case "room":
		if !strings.HasPrefix(ruleID, "!") || len(ruleID) < 2 {
			return nil, httpapi.InvalidParam("the rule id of a room rule must be a room id")
		}
	case "sender":
		if !validUserID(id.UserID(ruleID)) {
			return nil, httpapi.InvalidParam("the rule id of a sender rule must be a user id")
		}
	}
	q := r.URL.Query()
	if err := a.Rules.SetRule(r.Ctx(), u, kind, rule, q.Get("before"), q.Get("after")); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// DeletePushRule serves DELETE /pushrules/global/{kind}/{ruleId}.
func (a *PushAPI) DeletePushRule(r *httpapi.Request) (any, error) {
	kind, ruleID, attr, err := parsePushPath(r).rule()
	if err != nil {
		return nil, err
	}
	if attr != "" {
		return nil, httpapi.MethodNotAllowed("DELETE")
	}
	if err := a.Rules.DeleteRule(r.Ctx(), r.Caller.UserID, kind, ruleID); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// GetNotifications serves GET /notifications: the caller's notifications,
// newest first (from: a next_token; limit; only=highlight).
func (a *PushAPI) GetNotifications(r *httpapi.Request) (any, error) {
	q := r.URL.Query()
	var before int64
	if f := q.Get("from"); f != "" {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil || n <= 0 {
			return nil, httpapi.InvalidParam("invalid from token")
		}
		before = n
	}
	limit, err := r.QueryInt("limit", 20, 1, 100)
	if err != nil {
		return nil, err
	}
	only := q.Get("only")
	if only != "" && only != "highlight" {
		return nil, httpapi.InvalidParam("only must be highlight")
	}
	u := r.Caller.UserID
	ns, next, err := push.List(r.Ctx(), a.T, u, before, int(limit), only == "highlight")
	if err != nil {
		return nil, err
	}
	ids := make([]id.EventID, len(ns))
	roomSet := map[id.RoomID]bool{}
	var roomList []id.RoomID
	for i, n := range ns {
		ids[i] = n.EventID
		if !roomSet[n.RoomID] {
			roomSet[n.RoomID] = true
			roomList = append(roomList, n.RoomID)
		}
	}
	evs, err := a.Rooms.EventsByID(r.Ctx(), ids)
	if err != nil {
		return nil, err
	}
	formatted, err := a.Rooms.Format(r.Ctx(), evs, rooms.Viewer{UserID: u, Device: r.Caller.DeviceID})
	if err != nil {
		return nil, err
	}
	byID := map[id.EventID]rooms.ClientEvent{}
	for i, ev := range evs {
		if i < len(formatted) {
			byID[ev.EventID] = formatted[i]
		}
	}
	reads, err := a.Ephemeral.ReadUpTo(r.Ctx(), u, roomList)
	if err != nil {
		return nil, err
	}
	out := []map[string]any{}
	for _, n := range ns {
		ce, ok := byID[n.EventID]
		if !ok {
			continue // gone (for example purged): nothing to show
		}
		actions := n.Actions
		if actions == nil {
			actions = []json.RawMessage{}
		}
		out = append(out, map[string]any{
			"actions": actions,
			"event":   ce,
			"read":    reads[n.RoomID].Seq >= n.Seq,
			"room_id": n.RoomID,
			"ts":      n.TS,
		})
	}
	resp := map[string]any{"notifications": out}
	if next > 0 {
		resp["next_token"] = strconv.FormatInt(next, 10)
	}
	return resp, nil
}

// GetPushers serves GET /pushers.
func (a *PushAPI) GetPushers(r *httpapi.Request) (any, error) {
	ps, err := a.Pushers.List(r.Ctx(), r.Caller.UserID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"pushers": ps}, nil
}

// PostPushersSet serves POST /pushers/set: kind null deletes the pusher,
// anything else creates or replaces it. Only "http" pushers are accepted
// (Cirrus sends no email).
func (a *PushAPI) PostPushersSet(r *httpapi.Request) (any, error) {
	var body struct {
		Kind              json.RawMessage `json:"kind"`
		AppID             *string         `json:"app_id"`
		PushKey           *string         `json:"pushkey"`
		AppDisplayName    *string         `json:"app_display_name"`
		DeviceDisplayName *string         `json:"device_display_name"`
		ProfileTag        string          `json:"profile_tag"`
		Lang              *string         `json:"lang"`
		Data              json.RawMessage `json:"data"`
		Append            bool            `json:"append"`
	}
	if err := r.DecodeJSON(&body); err != nil {
		return nil, err
	}
	if body.Kind == nil {
		return nil, httpapi.MissingParam("missing kind")
	}
	if body.AppID == nil || *body.AppID == "" {
		return nil, httpapi.MissingParam("missing app_id")
	}
	if body.PushKey == nil || *body.PushKey == "" {
		return nil, httpapi.MissingParam("missing pushkey")
	}
	if len(*body.AppID) > 64 {
		return nil, httpapi.InvalidParam("app_id is over 64 bytes")
	}
	if len(*body.PushKey) > 512 {
		return nil, httpapi.InvalidParam("pushkey is over 512 bytes")
	}
	if strings.ContainsRune(*body.AppID, 0x1f) || strings.ContainsRune(*body.PushKey, 0x1f) {
		return nil, httpapi.InvalidParam("app_id and pushkey cannot contain control characters")
	}
	u := r.Caller.UserID
	if string(body.Kind) == "null" {
		if err := a.Pushers.Delete(r.Ctx(), u, *body.AppID, *body.PushKey); err != nil {
			return nil, err
		}
		return struct{}{}, nil
	}
	var kind string
	if json.Unmarshal(body.Kind, &kind) != nil {
		return nil, httpapi.BadJSON("kind must be a string or null")
	}
	if kind != "http" {
		return nil, httpapi.InvalidParam("unsupported pusher kind %q", kind)
	}
	for name, v := range map[string]*string{"app_display_name": body.AppDisplayName, "device_display_name": body.DeviceDisplayName, "lang": body.Lang} {
		if v == nil {
			return nil, httpapi.MissingParam("missing %s", name)
		}
	}
	if body.Data == nil || string(body.Data) == "null" {
		return nil, httpapi.MissingParam("missing data")
	}
	var data struct {
		URL    *string `json:"url"`
		Format *string `json:"format"`
	}
	if err := json.Unmarshal(body.Data, &data); err != nil {
		return nil, httpapi.BadJSON("data must be an object with string url and format")
	}
	if data.URL == nil {
		return nil, httpapi.MissingParam("http pushers need data.url")
	}
	if !push.ValidPushURL(*data.URL) {
		return nil, httpapi.InvalidParam("data.url must be an http(s) URL with the path /_matrix/push/v1/notify")
	}
	if data.Format != nil && *data.Format != "event_id_only" {
		return nil, httpapi.InvalidParam("unknown data.format %q", *data.Format)
	}
	p := push.Pusher{PushKey: *body.PushKey, Kind: kind, AppID: *body.AppID, AppDisplayName: *body.AppDisplayName,
		DeviceDisplayName: *body.DeviceDisplayName, ProfileTag: body.ProfileTag, Lang: *body.Lang, Data: body.Data}
	if err := a.Pushers.Set(r.Ctx(), u, p, body.Append); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
