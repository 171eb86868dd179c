package deploycheck

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// noValue is what Ref AWS::NoValue evaluates to; maps and lists drop it.
type noValue struct{}

// NoValue is the value of Ref AWS::NoValue.
var NoValue any = noValue{}

// PseudoParameters are CloudFormation's pseudo parameters, with the values
// the evaluator gives them unless an Env overrides them.
var PseudoParameters = map[string]string{
	"AWS::AccountId":        "123456789012",
	"AWS::NotificationARNs": "",
	"AWS::NoValue":          "",
	"AWS::Partition":        "aws",
	"AWS::Region":           "us-east-1",
	"AWS::StackId":          "arn:aws:cloudformation:us-east-1:123456789012:stack/cirrus/00000000-0000-0000-0000-000000000000",
	"AWS::StackName":        "cirrus",
	"AWS::URLSuffix":        "amazonaws.com",
}

// Env is what the evaluator resolves names against.
type Env struct {
	// Params are the parameter values (ParamValues builds them).
	Params map[string]any
	// Pseudo overrides pseudo parameter values.
	Pseudo map[string]string
	// Resource gives the value of Ref (attr "") or Fn::GetAtt on a resource.
	// Nil means Placeholder.
	Resource func(id, attr string) any
}

// Placeholder is the default value of a resource reference: "ref:ID" for Ref
// and "getatt:ID.Attr" for Fn::GetAtt, so a test can see what a value points at.
func Placeholder(id, attr string) any {
	if attr == "" {
		return "ref:" + id
	}
	return "getatt:" + id + "." + attr
}

// ParamValues returns every parameter's value: overrides first, then the
// default. A parameter with neither is an error.
func (t *Template) ParamValues(overrides map[string]any) (map[string]any, error) {
	out := map[string]any{}
	var missing []string
	for name, p := range t.Parameters {
		if v, ok := overrides[name]; ok {
			out[name] = v
		} else if d, ok := p["Default"]; ok {
			out[name] = fmt.Sprint(d)
		} else {
			missing = append(missing, name)
		}
	}
	for name := range overrides {
		if _, ok := t.Parameters[name]; !ok {
			return nil, fmt.Errorf("no parameter %s in the template", name)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, fmt.Errorf("parameters without a value: %s", strings.Join(missing, ", "))
	}
	return out, nil
}

// Eval resolves the intrinsic functions in v. It understands what a template
// like ours uses (Ref, GetAtt, Sub, Join, If, the condition functions,
// Select, Split, Base64, Contains); anything else is an error.
func (t *Template) Eval(v any, env *Env) (any, error) {
	return t.eval(v, env, map[string]bool{})
}

func (t *Template) eval(v any, env *Env, visiting map[string]bool) (any, error) {
	if name, arg, ok := Intrinsic(v); ok {
		return t.evalFn(name, arg, env, visiting)
	}
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			ev, err := t.eval(e, env, visiting)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			if ev != NoValue {
				out[k] = ev
			}
		}
		return out, nil
	case []any:
		out := make([]any, 0, len(x))
		for i, e := range x {
			ev, err := t.eval(e, env, visiting)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			if ev != NoValue {
				out = append(out, ev)
			}
		}
		return out, nil
	default:
		return v, nil
	}
}

// Condition evaluates a named condition of the Conditions section.
func (t *Template) Condition(name string, env *Env) (bool, error) {
	return t.condition(name, env, map[string]bool{})
}

func (t *Template) condition(name string, env *Env, visiting map[string]bool) (bool, error) {
	def, ok := t.Conditions[name]
	if !ok {
		return false, fmt.Errorf("no condition %s", name)
	}
	if visiting[name] {
		return false, fmt.Errorf("condition %s refers to itself", name)
	}
	visiting[name] = true
	defer delete(visiting, name)
	v, err := t.eval(def, env, visiting)
	if err != nil {
		return false, fmt.Errorf("condition %s: %w", name, err)
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("condition %s is %v, not a boolean", name, v)
	}
	return b, nil
}

func (t *Template) ref(name string, env *Env) (any, error) {
	if _, ok := PseudoParameters[name]; ok {
		if name == "AWS::NoValue" {
			return NoValue, nil
		}
		if v, ok := env.Pseudo[name]; ok {
			return v, nil
		}
		return PseudoParameters[name], nil
	}
	if _, ok := t.Parameters[name]; ok {
		v, ok := env.Params[name]
		if !ok {
			return nil, fmt.Errorf("parameter %s has no value", name)
		}
		return v, nil
	}
	if _, ok := t.Resources[name]; ok {
		return env.resource(name, ""), nil
	}
	return nil, fmt.Errorf("Ref %s: no such parameter or resource", name)
}

func (e *Env) resource(id, attr string) any {
	if e.Resource != nil {
		return e.Resource(id, attr)
	}
	return Placeholder(id, attr)
}

func (t *Template) evalFn(name string, arg any, env *Env, visiting map[string]bool) (any, error) {
	args := func(n int) ([]any, error) {
		l, ok := arg.([]any)
		if !ok || (n >= 0 && len(l) != n) {
			return nil, fmt.Errorf("%s wants a list of %d", name, n)
		}
		out := make([]any, len(l))
		for i, a := range l {
			v, err := t.eval(a, env, visiting)
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
		return out, nil
	}
	switch name {
	case "Ref":
		s, ok := arg.(string)
		if !ok {
			return nil, fmt.Errorf("Ref of a non-string %v", arg)
		}
		return t.ref(s, env)
	case "Condition":
		s, ok := arg.(string)
		if !ok {
			return nil, fmt.Errorf("Condition of a non-string %v", arg)
		}
		return t.condition(s, env, visiting)
	case "Fn::GetAtt":
		id, attr := GetAttTarget(map[string]any{name: arg})
		if id == "" {
			return nil, fmt.Errorf("malformed Fn::GetAtt %v", arg)
		}
		if _, ok := t.Resources[id]; !ok {
			return nil, fmt.Errorf("Fn::GetAtt %s.%s: no such resource", id, attr)
		}
		return env.resource(id, attr), nil
	case "Fn::Sub":
		return t.sub(arg, env, visiting)
	case "Fn::Join":
		l, ok := arg.([]any)
		if !ok || len(l) != 2 {
			return nil, fmt.Errorf("Fn::Join wants [delimiter, list]")
		}
		sep, ok := l[0].(string)
		if !ok {
			return nil, fmt.Errorf("Fn::Join delimiter is not a string")
		}
		items, err := t.eval(l[1], env, visiting)
		if err != nil {
			return nil, err
		}
		var parts []string
		for _, it := range List(items) {
			parts = append(parts, fmt.Sprint(it))
		}
		return strings.Join(parts, sep), nil
	case "Fn::If":
		l, ok := arg.([]any)
		if !ok || len(l) != 3 {
			return nil, fmt.Errorf("Fn::If wants [condition, then, else]")
		}
		cname, ok := l[0].(string)
		if !ok {
			return nil, fmt.Errorf("Fn::If condition is not a name")
		}
		c, err := t.condition(cname, env, visiting)
		if err != nil {
			return nil, err
		}
		if c {
			return t.eval(l[1], env, visiting)
		}
		return t.eval(l[2], env, visiting)
	case "Fn::Equals":
		l, err := args(2)
		if err != nil {
			return nil, err
		}
		return scalarString(l[0]) == scalarString(l[1]), nil
	case "Fn::Not":
		l, err := args(1)
		if err != nil {
			return nil, err
		}
		b, ok := l[0].(bool)
		if !ok {
			return nil, fmt.Errorf("Fn::Not of a non-boolean %v", l[0])
		}
		return !b, nil
	case "Fn::And", "Fn::Or":
		l, err := args(-1)
		if err != nil {
			return nil, err
		}
		if len(l) < 2 || len(l) > 10 {
			return nil, fmt.Errorf("%s takes 2 to 10 conditions", name)
		}
		and := name == "Fn::And"
		res := and
		for _, e := range l {
			b, ok := e.(bool)
			if !ok {
				return nil, fmt.Errorf("%s of a non-boolean %v", name, e)
			}
			if and {
				res = res && b
			} else {
				res = res || b
			}
		}
		return res, nil
	case "Fn::Contains":
		l, err := args(2)
		if err != nil {
			return nil, err
		}
		want := scalarString(l[1])
		for _, e := range List(l[0]) {
			if scalarString(e) == want {
				return true, nil
			}
		}
		return false, nil
	case "Fn::Select":
		l, err := args(2)
		if err != nil {
			return nil, err
		}
		i, err := strconv.Atoi(scalarString(l[0]))
		items := List(l[1])
		if err != nil || i < 0 || i >= len(items) {
			return nil, fmt.Errorf("Fn::Select index %v out of range", l[0])
		}
		return items[i], nil
	case "Fn::Split":
		l, err := args(2)
		if err != nil {
			return nil, err
		}
		var out []any
		for _, p := range strings.Split(scalarString(l[1]), scalarString(l[0])) {
			out = append(out, p)
		}
		return out, nil
	case "Fn::Base64":
		return t.eval(arg, env, visiting)
	}
	return nil, fmt.Errorf("the evaluator does not support %s", name)
}

func scalarString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

// SubVariables returns the ${...} names in a Fn::Sub string, skipping ${!...}
// literals.
func SubVariables(s string) ([]string, error) {
	var out []string
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			return out, nil
		}
		j := strings.Index(s[i:], "}")
		if j < 0 {
			return nil, fmt.Errorf("unterminated ${ in %q", s)
		}
		name := s[i+2 : i+j]
		if !strings.HasPrefix(name, "!") {
			out = append(out, strings.TrimSpace(name))
		}
		s = s[i+j+1:]
	}
}

func (t *Template) sub(arg any, env *Env, visiting map[string]bool) (any, error) {
	var format string
	vars := map[string]any{}
	switch a := arg.(type) {
	case string:
		format = a
	case []any:
		if len(a) != 2 {
			return nil, fmt.Errorf("Fn::Sub wants a string or [string, variables]")
		}
		s, ok := a[0].(string)
		if !ok {
			return nil, fmt.Errorf("Fn::Sub format is not a string")
		}
		format = s
		for k, v := range asMap(a[1]) {
			ev, err := t.eval(v, env, visiting)
			if err != nil {
				return nil, err
			}
			vars[k] = ev
		}
	default:
		return nil, fmt.Errorf("Fn::Sub wants a string or [string, variables]")
	}
	var b strings.Builder
	s := format
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			break
		}
		j := strings.Index(s[i:], "}")
		if j < 0 {
			return nil, fmt.Errorf("unterminated ${ in %q", format)
		}
		b.WriteString(s[:i])
		name := s[i+2 : i+j]
		s = s[i+j+1:]
		if strings.HasPrefix(name, "!") {
			b.WriteString("${" + name[1:] + "}")
			continue
		}
		name = strings.TrimSpace(name)
		var v any
		var err error
		if val, ok := vars[name]; ok {
			v = val
		} else if id, attr, dotted := strings.Cut(name, "."); dotted && !strings.HasPrefix(name, "AWS::") {
			v, err = t.evalFn("Fn::GetAtt", []any{id, attr}, env, visiting)
		} else {
			v, err = t.ref(name, env)
		}
		if err != nil {
			return nil, fmt.Errorf("Fn::Sub %q: %w", format, err)
		}
		b.WriteString(scalarString(v))
	}
	return b.String(), nil
}
