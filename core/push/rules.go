// Package push holds a user's push rules (stored as the m.push_rules
// account data, so /sync carries every change), their evaluation, and the
// pushers.
package push

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/userdata"
)

// Kinds are the rule kinds in priority order.
var Kinds = []string{"override", "content", "room", "sender", "underride"}

// ValidKind reports whether k is one of Kinds.
func ValidKind(k string) bool {
	for _, x := range Kinds {
		if x == k {
			return true
		}
	}
	return false
}

// Rule is one push rule as the spec shows it. Actions and conditions stay
// raw JSON so that what a client stored is given back exactly.
type Rule struct {
	RuleID     string             `json:"rule_id"`
	Default    bool               `json:"default"`
	Enabled    bool               `json:"enabled"`
	Actions    []json.RawMessage  `json:"actions"`
	Conditions *[]json.RawMessage `json:"conditions,omitempty"`
	Pattern    *string            `json:"pattern,omitempty"`
}

// Ruleset is the rules of each kind, most important first.
type Ruleset struct {
	Override  []*Rule `json:"override"`
	Content   []*Rule `json:"content"`
	Room      []*Rule `json:"room"`
	Sender    []*Rule `json:"sender"`
	Underride []*Rule `json:"underride"`
}

func (rs *Ruleset) list(kind string) *[]*Rule {
	switch kind {
	case "override":
		return &rs.Override
	case "content":
		return &rs.Content
	case "room":
		return &rs.Room
	case "sender":
		return &rs.Sender
	case "underride":
		return &rs.Underride
	}
	return nil
}

// Find returns the rule of that kind and id, or nil.
func (rs *Ruleset) Find(kind, ruleID string) *Rule {
	l := rs.list(kind)
	if l == nil {
		return nil
	}
	for _, r := range *l {
		if r.RuleID == ruleID {
			return r
		}
	}
	return nil
}

func (rs *Ruleset) normalise() {
	for _, k := range Kinds {
		l := rs.list(k)
		if *l == nil {
			*l = []*Rule{}
		}
	}
}

// content is the m.push_rules account data content.
type content struct {
	Global Ruleset `json:"global"`
}

// DefaultContent is the m.push_rules content of a user who has changed
// nothing: the server-default rules.
func DefaultContent(u id.UserID) (json.RawMessage, error) {
	return json.Marshal(content{Global: Defaults(u)})
}

// Merge builds the effective ruleset from what is stored (nil: nothing):
// the current server-default rules, with the enabled flag and actions the
// user gave them, and the user's own rules in their stored order. User
// rules come before the default rules of their kind, except that
// .m.rule.master stays first of all.
func Merge(u id.UserID, stored json.RawMessage) Ruleset {
	out := Defaults(u)
	if len(stored) == 0 {
		return out
	}
	var c content
	if err := json.Unmarshal(stored, &c); err != nil {
		return out // unreadable: fall back to the defaults
	}
	for _, k := range Kinds {
		defs := *out.list(k)
		var own []*Rule
		for _, r := range *c.Global.list(k) {
			if r == nil || r.RuleID == "" {
				continue
			}
			if strings.HasPrefix(r.RuleID, ".") {
				if d := out.Find(k, r.RuleID); d != nil {
					d.Enabled = r.Enabled
					if r.Actions != nil {
						d.Actions = r.Actions
					}
				}
				continue
			}
			r.Default = false
			own = append(own, r)
		}
		var merged []*Rule
		if k == "override" && len(defs) > 0 && defs[0].RuleID == ".m.rule.master" {
			merged = append(merged, defs[0])
			defs = defs[1:]
		}
		merged = append(merged, own...)
		merged = append(merged, defs...)
		*out.list(k) = merged
	}
	out.normalise()
	return out
}

// Rules reads and changes users' push rules.
type Rules struct {
	UserData *userdata.Service
}

// Get returns the user's effective ruleset.
func (s *Rules) Get(ctx context.Context, u id.UserID) (Ruleset, error) {
	raw, err := s.UserData.Get(ctx, u, "", userdata.TypePushRules)
	if err != nil && !isNotFound(err) {
		return Ruleset{}, err
	}
	return Merge(u, raw), nil
}

func isNotFound(err error) bool {
	var he *httpapi.Error
	return errors.As(err, &he) && he.Code == "M_NOT_FOUND"
}

// Change applies fn to the user's effective ruleset and stores the result
// as the m.push_rules account data (a version-checked write: concurrent
// changes are applied one after the other).
func (s *Rules) Change(ctx context.Context, u id.UserID, fn func(rs *Ruleset) error) error {
	return s.UserData.Update(ctx, u, "", userdata.TypePushRules, func(old json.RawMessage) (json.RawMessage, error) {
		rs := Merge(u, old)
		if err := fn(&rs); err != nil {
			return nil, err
		}
		return json.Marshal(content{Global: rs})
	})
}

// SetRule adds or replaces a user-defined rule; before and after name
// user-defined rules of the same kind to place it next to.
func (s *Rules) SetRule(ctx context.Context, u id.UserID, kind string, r *Rule, before, after string) error {
	return s.Change(ctx, u, func(rs *Ruleset) error {
		l := rs.list(kind)
		var rest []*Rule
		existed := false
		for _, x := range *l {
			if x.RuleID == r.RuleID {
				existed = true
				continue
			}
			rest = append(rest, x)
		}
		pos := -1
		findUser := func(ruleID string) (int, error) {
			for i, x := range rest {
				if x.RuleID == ruleID && !x.Default {
					return i, nil
				}
			}
			return 0, httpapi.BadRequest("before/after rule not found: %s", ruleID)
		}
		switch {
		case before != "":
			i, err := findUser(before)
			if err != nil {
				return err
			}
			pos = i
		case after != "":
			i, err := findUser(after)
			if err != nil {
				return err
			}
			pos = i + 1
		}
		if pos < 0 {
			// A new rule is the most important user rule of its kind; an
			// existing one keeps its place.
			pos = firstUserSlot(rest, kind)
			if existed {
				for i, x := range *l {
					if x.RuleID == r.RuleID {
						pos = min(i, len(rest))
						break
					}
				}
			}
		}
		out := make([]*Rule, 0, len(rest)+1)
		out = append(out, rest[:pos]...)
		out = append(out, r)
		out = append(out, rest[pos:]...)
		*l = out
		return nil
	})
}

// firstUserSlot is where the most important user rule of a kind goes:
// first, but after .m.rule.master.
func firstUserSlot(l []*Rule, kind string) int {
	if kind == "override" && len(l) > 0 && l[0].RuleID == ".m.rule.master" {
		return 1
	}
	return 0
}

// DeleteRule removes a user-defined rule.
func (s *Rules) DeleteRule(ctx context.Context, u id.UserID, kind, ruleID string) error {
	return s.Change(ctx, u, func(rs *Ruleset) error {
		l := rs.list(kind)
		for i, x := range *l {
			if x.RuleID == ruleID && !x.Default {
				*l = append((*l)[:i:i], (*l)[i+1:]...)
				return nil
			}
		}
		return httpapi.NotFound("the push rule was not found")
	})
}

// SetEnabled enables or disables a rule (default ones too).
func (s *Rules) SetEnabled(ctx context.Context, u id.UserID, kind, ruleID string, enabled bool) error {
	return s.Change(ctx, u, func(rs *Ruleset) error {
		r := rs.Find(kind, ruleID)
		if r == nil {
			return httpapi.NotFound("the push rule was not found")
		}
		if r.Enabled == enabled {
			return userdata.ErrUnchanged
		}
		r.Enabled = enabled
		return nil
	})
}

// SetActions replaces a rule's actions (default ones too).
func (s *Rules) SetActions(ctx context.Context, u id.UserID, kind, ruleID string, actions []json.RawMessage) error {
	return s.Change(ctx, u, func(rs *Ruleset) error {
		r := rs.Find(kind, ruleID)
		if r == nil {
			return httpapi.NotFound("the push rule was not found")
		}
		r.Actions = actions
		return nil
	})
}

// ValidateActions checks actions against the spec: "notify", the
// deprecated "dont_notify" and "coalesce", or a set_tweak object.
func ValidateActions(actions []json.RawMessage) error {
	for _, a := range actions {
		var s string
		if json.Unmarshal(a, &s) == nil {
			switch s {
			case "notify", "dont_notify", "coalesce":
				continue
			}
			return httpapi.InvalidParam("unknown push rule action %q", s)
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(a, &obj) != nil {
			return httpapi.InvalidParam("a push rule action must be a string or an object")
		}
		var tweak string
		if json.Unmarshal(obj["set_tweak"], &tweak) != nil || tweak == "" {
			return httpapi.InvalidParam("a push rule action object needs a set_tweak string")
		}
	}
	return nil
}

// ValidateConditions checks that each condition is an object with a kind.
func ValidateConditions(conds []json.RawMessage) error {
	for _, c := range conds {
		var obj struct {
			Kind string `json:"kind"`
		}
		if json.Unmarshal(c, &obj) != nil || obj.Kind == "" {
			return httpapi.InvalidParam("a push condition must be an object with a kind")
		}
	}
	return nil
}
