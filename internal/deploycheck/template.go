// Package deploycheck reads a SAM/CloudFormation template the way the
// deployment tests need it: as plain YAML data with the short-form intrinsic
// tags (!Ref, !Sub, …) rewritten to their long forms, an evaluator for the
// intrinsics, and a set of cheap checks (references, dependency cycles, API
// Gateway route rules, CloudFormation limits) that goformation does not do.
//
// It knows nothing about Cirrus: template_test.go at the repository root
// feeds it the route table and the resource definitions.
package deploycheck

import (
	"fmt"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Template is a parsed template. Every map is map[string]any, every list
// []any; intrinsic functions appear in long form ({"Ref": "X"},
// {"Fn::GetAtt": ["X", "Arn"]}, …).
type Template struct {
	Raw        map[string]any
	Parameters map[string]map[string]any
	Conditions map[string]any
	Rules      map[string]any
	Resources  map[string]*Resource
	Outputs    map[string]map[string]any
	// Globals is the SAM Globals section (e.g. Globals["Function"]).
	Globals map[string]any
}

// Resource is one entry of the Resources section.
type Resource struct {
	ID         string
	Type       string
	Properties map[string]any
	Raw        map[string]any
}

// Parse reads a template written in YAML.
func Parse(data []byte) (*Template, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, fmt.Errorf("template: expected one YAML document")
	}
	v, err := convert(doc.Content[0])
	if err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	raw, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("template: the top level is not a mapping")
	}
	t := &Template{
		Raw:        raw,
		Parameters: map[string]map[string]any{},
		Conditions: asMap(raw["Conditions"]),
		Rules:      asMap(raw["Rules"]),
		Resources:  map[string]*Resource{},
		Outputs:    map[string]map[string]any{},
		Globals:    asMap(raw["Globals"]),
	}
	for name, p := range asMap(raw["Parameters"]) {
		m, ok := p.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("template: parameter %s is not a mapping", name)
		}
		t.Parameters[name] = m
	}
	for id, r := range asMap(raw["Resources"]) {
		m, ok := r.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("template: resource %s is not a mapping", id)
		}
		typ, _ := m["Type"].(string)
		t.Resources[id] = &Resource{ID: id, Type: typ, Properties: asMap(m["Properties"]), Raw: m}
	}
	for name, o := range asMap(raw["Outputs"]) {
		m, ok := o.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("template: output %s is not a mapping", name)
		}
		t.Outputs[name] = m
	}
	return t, nil
}

// ResourcesOfType returns the resources of one type, sorted by logical id.
func (t *Template) ResourcesOfType(typ string) []*Resource {
	var out []*Resource
	for _, r := range t.Resources {
		if r.Type == typ {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// intrinsicTags maps each short-form tag to its long-form key.
var intrinsicTags = map[string]string{
	"!Ref":          "Ref",
	"!Condition":    "Condition",
	"!GetAtt":       "Fn::GetAtt",
	"!Sub":          "Fn::Sub",
	"!Join":         "Fn::Join",
	"!If":           "Fn::If",
	"!Equals":       "Fn::Equals",
	"!Not":          "Fn::Not",
	"!And":          "Fn::And",
	"!Or":           "Fn::Or",
	"!Select":       "Fn::Select",
	"!Split":        "Fn::Split",
	"!FindInMap":    "Fn::FindInMap",
	"!Base64":       "Fn::Base64",
	"!Cidr":         "Fn::Cidr",
	"!ImportValue":  "Fn::ImportValue",
	"!GetAZs":       "Fn::GetAZs",
	"!Transform":    "Fn::Transform",
	"!ToJsonString": "Fn::ToJsonString",
	"!Length":       "Fn::Length",
	"!Contains":     "Fn::Contains",
}

// convert turns a YAML node into plain Go data, rewriting intrinsic tags and
// refusing duplicate keys (which YAML parsers silently resolve differently).
func convert(n *yaml.Node) (any, error) {
	var v any
	switch n.Kind {
	case yaml.AliasNode:
		return convert(n.Alias)
	case yaml.ScalarNode:
		if _, custom := intrinsicTags[n.Tag]; custom {
			v = n.Value
		} else if strings.HasPrefix(n.Tag, "!") && !strings.HasPrefix(n.Tag, "!!") {
			return nil, fmt.Errorf("line %d: unknown tag %s", n.Line, n.Tag)
		} else if err := n.Decode(&v); err != nil {
			return nil, fmt.Errorf("line %d: %w", n.Line, err)
		}
	case yaml.SequenceNode:
		list := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			cv, err := convert(c)
			if err != nil {
				return nil, err
			}
			list = append(list, cv)
		}
		v = list
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("line %d: mapping key is not a scalar", k.Line)
			}
			if k.Value == "<<" {
				return nil, fmt.Errorf("line %d: YAML merge keys are not supported by CloudFormation", k.Line)
			}
			if _, dup := m[k.Value]; dup {
				return nil, fmt.Errorf("line %d: key %q appears twice in one mapping", k.Line, k.Value)
			}
			cv, err := convert(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			m[k.Value] = cv
		}
		v = m
	default:
		return nil, fmt.Errorf("line %d: unexpected YAML node", n.Line)
	}
	long, ok := intrinsicTags[n.Tag]
	if !ok {
		if strings.HasPrefix(n.Tag, "!") && !strings.HasPrefix(n.Tag, "!!") {
			return nil, fmt.Errorf("line %d: unknown tag %s", n.Line, n.Tag)
		}
		return v, nil
	}
	if long == "Fn::GetAtt" {
		if s, ok := v.(string); ok {
			id, attr, found := strings.Cut(s, ".")
			if !found {
				return nil, fmt.Errorf("line %d: !GetAtt %q is not Resource.Attribute", n.Line, s)
			}
			v = []any{id, attr}
		}
	}
	return map[string]any{long: v}, nil
}

// Intrinsic reports whether v is a one-key map naming an intrinsic function
// (or a Condition reference), and returns its name and argument.
func Intrinsic(v any) (name string, arg any, ok bool) {
	m, isMap := v.(map[string]any)
	if !isMap || len(m) != 1 {
		return "", nil, false
	}
	for k, a := range m {
		if k == "Ref" || k == "Condition" || strings.HasPrefix(k, "Fn::") {
			return k, a, true
		}
	}
	return "", nil, false
}

// IsRef reports whether v is {"Ref": id}.
func IsRef(v any, id string) bool {
	name, arg, ok := Intrinsic(v)
	return ok && name == "Ref" && arg == id
}

// RefTarget returns the id v refers to with Ref, or "".
func RefTarget(v any) string {
	if name, arg, ok := Intrinsic(v); ok && name == "Ref" {
		s, _ := arg.(string)
		return s
	}
	return ""
}

// GetAttTarget returns the resource and attribute of {"Fn::GetAtt": [...]}.
func GetAttTarget(v any) (id, attr string) {
	name, arg, ok := Intrinsic(v)
	if !ok || name != "Fn::GetAtt" {
		return "", ""
	}
	l, _ := arg.([]any)
	if len(l) != 2 {
		return "", ""
	}
	id, _ = l[0].(string)
	attr, _ = l[1].(string)
	return id, attr
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	if m == nil {
		return map[string]any{}
	}
	return m
}

// Map returns v as a map (empty if it is not one).
func Map(v any) map[string]any { return asMap(v) }

// List returns v as a list; a single value becomes a one-element list.
func List(v any) []any {
	switch x := v.(type) {
	case nil:
		return nil
	case []any:
		return x
	default:
		return []any{x}
	}
}

// Path walks nested maps by key.
func Path(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}
