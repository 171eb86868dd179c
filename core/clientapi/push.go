package clientapi

import (
	"encoding/json"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/push"
)

// PushAPI serves the push rules endpoints.
type PushAPI struct {
	Rules *push.Rules
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
