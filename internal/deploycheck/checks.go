package deploycheck

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// Problem is one finding of a check.
type Problem struct {
	Where string // e.g. "Resources.Table.Properties.KeySchema"
	Msg   string
}

func (p Problem) String() string { return p.Where + ": " + p.Msg }

// Limits of CloudFormation, SAM, Lambda and API Gateway the checks enforce.
const (
	MaxResources       = 500   // resources in one stack, after the SAM transform
	MaxParameters      = 200   // parameters in one template
	MaxOutputs         = 200   // outputs in one template
	MaxLogicalID       = 255   // characters in a logical id
	MaxEnvironmentSize = 4096  // bytes of a function's environment variables
	MaxHTTPAPIRoutes   = 300   // routes per HTTP API (default quota)
	MaxLambdaPolicy    = 20480 // bytes of a function's resource-based policy
	// PermissionBytes is roughly what one API Gateway permission statement
	// adds to a function's resource-based policy (SAM adds one per event).
	PermissionBytes = 400
)

// ServerlessTransform is the SAM transform.
const ServerlessTransform = "AWS::Serverless-2016-10-31"

// MergeGlobals returns a SAM function's properties with the Globals
// "Function" section merged in the way the SAM transform does it: maps are
// merged key by key (the function's value wins), lists are concatenated
// (globals first), anything else (including intrinsics) is taken from the
// function when it sets it.
func (t *Template) MergeGlobals(r *Resource) map[string]any {
	g := asMap(t.Globals["Function"])
	merged, _ := mergeSAM(g, r.Properties).(map[string]any)
	return merged
}

func mergeSAM(global, local any) any {
	_, _, gi := Intrinsic(global)
	_, _, li := Intrinsic(local)
	gm, gIsMap := global.(map[string]any)
	lm, lIsMap := local.(map[string]any)
	if gIsMap && lIsMap && !gi && !li {
		out := make(map[string]any, len(gm)+len(lm))
		for k, v := range gm {
			out[k] = v
		}
		for k, v := range lm {
			if gv, ok := out[k]; ok {
				out[k] = mergeSAM(gv, v)
			} else {
				out[k] = v
			}
		}
		return out
	}
	gl, gIsList := global.([]any)
	ll, lIsList := local.([]any)
	if gIsList && lIsList {
		return append(append([]any{}, gl...), ll...)
	}
	if local == nil {
		return global
	}
	return local
}

// pseudoOrNoValue reports whether name is a pseudo parameter.
func pseudo(name string) bool {
	_, ok := PseudoParameters[name]
	return ok
}

// knownAttributes lists the Fn::GetAtt attributes of the resource types we
// use. Types not listed are not checked.
var knownAttributes = map[string][]string{
	"AWS::SQS::Queue":           {"Arn", "QueueName", "QueueUrl"},
	"AWS::DynamoDB::Table":      {"Arn", "StreamArn"},
	"AWS::S3::Bucket":           {"Arn", "DomainName", "DualStackDomainName", "RegionalDomainName", "WebsiteURL"},
	"AWS::Serverless::Function": {"Arn"},
	"AWS::Serverless::HttpApi":  {"ApiEndpoint", "ApiId"},
	"AWS::IAM::Role":            {"Arn", "RoleId"},
	"AWS::IAM::ManagedPolicy":   {"PolicyArn"},
	"AWS::Logs::LogGroup":       {"Arn"},
	"AWS::S3::BucketPolicy":     {},
}

// GeneratedIDs are the logical ids the SAM transform adds that a template
// may refer to, with the resource that owns each.
func (t *Template) GeneratedIDs() map[string]string {
	out := map[string]string{}
	implicitAPI := false
	for id, r := range t.Resources {
		switch r.Type {
		case "AWS::Serverless::Function":
			if _, hasRole := r.Properties["Role"]; !hasRole {
				out[id+"Role"] = id
			}
			for _, ev := range asMap(r.Properties["Events"]) {
				e := asMap(ev)
				if e["Type"] == "HttpApi" {
					if _, ok := asMap(e["Properties"])["ApiId"]; !ok {
						implicitAPI = true
					}
				}
			}
		case "AWS::Serverless::HttpApi":
			if _, ok := r.Properties["StageName"]; !ok {
				out[id+"ApiGatewayDefaultStage"] = id
			}
		}
	}
	if implicitAPI {
		out["ServerlessHttpApi"] = "ServerlessHttpApi"
	}
	return out
}

// reference is one use of a name found while walking a value.
type reference struct {
	kind string // "Ref", "GetAtt", "Sub", "Condition", "If"
	name string
	attr string
	at   string
}

// references collects every reference inside v.
func references(v any, at string, out *[]reference) {
	if name, arg, ok := Intrinsic(v); ok {
		switch name {
		case "Ref":
			if s, ok := arg.(string); ok {
				*out = append(*out, reference{kind: "Ref", name: s, at: at})
			} else {
				*out = append(*out, reference{kind: "Ref", name: fmt.Sprint(arg), at: at + " (Ref of a non-string)"})
			}
			return
		case "Condition":
			if s, ok := arg.(string); ok {
				*out = append(*out, reference{kind: "Condition", name: s, at: at})
			}
			return
		case "Fn::GetAtt":
			id, attr := GetAttTarget(v)
			*out = append(*out, reference{kind: "GetAtt", name: id, attr: attr, at: at})
			return
		case "Fn::If":
			if l, ok := arg.([]any); ok && len(l) == 3 {
				if s, ok := l[0].(string); ok {
					*out = append(*out, reference{kind: "If", name: s, at: at})
				}
				references(l[1], at+".Fn::If[1]", out)
				references(l[2], at+".Fn::If[2]", out)
				return
			}
		case "Fn::Sub":
			format, vars := "", map[string]any{}
			switch a := arg.(type) {
			case string:
				format = a
			case []any:
				if len(a) == 2 {
					format, _ = a[0].(string)
					vars = asMap(a[1])
					for k, e := range vars {
						references(e, at+".Fn::Sub."+k, out)
					}
				}
			}
			names, err := SubVariables(format)
			if err != nil {
				*out = append(*out, reference{kind: "Sub", name: "", at: at + " (" + err.Error() + ")"})
			}
			for _, n := range names {
				if _, local := vars[n]; local {
					continue
				}
				if id, attr, dotted := strings.Cut(n, "."); dotted && !strings.HasPrefix(n, "AWS::") {
					*out = append(*out, reference{kind: "GetAtt", name: id, attr: attr, at: at + " (in Fn::Sub)"})
				} else {
					*out = append(*out, reference{kind: "Ref", name: n, at: at + " (in Fn::Sub)"})
				}
			}
			return
		}
		references(arg, at+"."+name, out)
		return
	}
	switch x := v.(type) {
	case map[string]any:
		for _, k := range sortedKeys(x) {
			references(x[k], at+"."+k, out)
		}
	case []any:
		for i, e := range x {
			references(e, fmt.Sprintf("%s[%d]", at, i), out)
		}
	}
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// CheckRefs checks that every Ref, Fn::GetAtt, ${...} in Fn::Sub, condition
// name and DependsOn names something that exists: a parameter, a resource (or
// one SAM generates), a pseudo parameter, a condition. Conditions and Rules
// may only use parameters; GetAtt attributes are checked for the resource
// types we know.
func (t *Template) CheckRefs() []Problem {
	var probs []Problem
	gen := t.GeneratedIDs()
	isResource := func(id string) bool {
		_, ok := t.Resources[id]
		_, g := gen[id]
		return ok || g
	}
	check := func(refs []reference, paramsOnly bool) {
		for _, r := range refs {
			switch r.kind {
			case "Ref":
				_, isParam := t.Parameters[r.name]
				switch {
				case isParam || pseudo(r.name):
				case paramsOnly:
					probs = append(probs, Problem{r.at, fmt.Sprintf("%q is not a parameter or pseudo parameter (only those may be used here)", r.name)})
				case !isResource(r.name):
					probs = append(probs, Problem{r.at, fmt.Sprintf("%q is not a parameter, resource or pseudo parameter", r.name)})
				}
			case "GetAtt":
				if paramsOnly {
					probs = append(probs, Problem{r.at, "Fn::GetAtt is not allowed here"})
					continue
				}
				if !isResource(r.name) {
					probs = append(probs, Problem{r.at, fmt.Sprintf("Fn::GetAtt names %q, which is not a resource", r.name)})
					continue
				}
				if res, ok := t.Resources[r.name]; ok {
					if attrs, known := knownAttributes[res.Type]; known && !contains(attrs, r.attr) {
						probs = append(probs, Problem{r.at, fmt.Sprintf("%s (%s) has no attribute %q (known: %s)", r.name, res.Type, r.attr, strings.Join(attrs, ", "))})
					}
				}
			case "Condition", "If":
				if _, ok := t.Conditions[r.name]; !ok {
					probs = append(probs, Problem{r.at, fmt.Sprintf("condition %q is not defined", r.name)})
				}
			case "Sub":
				probs = append(probs, Problem{r.at, "malformed Fn::Sub"})
			}
		}
	}
	for _, id := range sortedResourceIDs(t) {
		r := t.Resources[id]
		var refs []reference
		for _, k := range sortedKeys(r.Raw) {
			switch k {
			case "Metadata", "Type":
				continue
			case "Condition":
				if s, ok := r.Raw[k].(string); ok {
					refs = append(refs, reference{kind: "Condition", name: s, at: "Resources." + id + ".Condition"})
				}
				continue
			case "DependsOn":
				for _, d := range List(r.Raw[k]) {
					if s, _ := d.(string); !isResource(s) {
						probs = append(probs, Problem{"Resources." + id + ".DependsOn", fmt.Sprintf("%v is not a resource", d)})
					}
				}
				continue
			}
			references(r.Raw[k], "Resources."+id+"."+k, &refs)
		}
		check(refs, false)
	}
	var refs []reference
	references(t.Raw["Globals"], "Globals", &refs)
	references(t.Raw["Outputs"], "Outputs", &refs)
	check(refs, false)
	refs = nil
	references(t.Raw["Conditions"], "Conditions", &refs)
	references(t.Raw["Rules"], "Rules", &refs)
	check(refs, true)
	return probs
}

func contains(l []string, s string) bool {
	for _, e := range l {
		if e == s {
			return true
		}
	}
	return false
}

func sortedResourceIDs(t *Template) []string {
	ids := make([]string, 0, len(t.Resources))
	for id := range t.Resources {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Dependencies returns, for each resource, the resources it needs first:
// what it refers to (Ref, GetAtt, Sub, DependsOn, and for SAM functions the
// Globals too), plus the edges the SAM transform adds that are invisible in
// the template: an API's generated definition names the ARN of every
// function that has an event on it, so the API depends on those functions.
// References to generated ids (FooRole) count as references to their owner.
func (t *Template) Dependencies() map[string][]string {
	gen := t.GeneratedIDs()
	owner := func(id string) string {
		if _, ok := t.Resources[id]; ok {
			return id
		}
		if o, ok := gen[id]; ok {
			if _, ok := t.Resources[o]; ok {
				return o
			}
		}
		return ""
	}
	deps := map[string]map[string]bool{}
	add := func(from, to string) {
		to = owner(to)
		if to == "" {
			return
		}
		if deps[from] == nil {
			deps[from] = map[string]bool{}
		}
		deps[from][to] = true
	}
	for id, r := range t.Resources {
		var refs []reference
		for k, v := range r.Raw {
			if k == "Metadata" || k == "Type" || k == "Condition" {
				continue
			}
			if k == "DependsOn" {
				for _, d := range List(v) {
					if s, ok := d.(string); ok {
						add(id, s)
					}
				}
				continue
			}
			if k == "Properties" && r.Type == "AWS::Serverless::Function" {
				// A function's event sources become resources of their own
				// (permissions, event source mappings) that depend on the
				// function and the source; the function depends on neither.
				props := map[string]any{}
				for pk, pv := range asMap(v) {
					if pk != "Events" {
						props[pk] = pv
					}
				}
				v = props
			}
			references(v, id, &refs)
		}
		if r.Type == "AWS::Serverless::Function" {
			references(t.Globals["Function"], id, &refs)
			for _, ev := range asMap(r.Properties["Events"]) {
				e := asMap(ev)
				props := asMap(e["Properties"])
				var api any
				switch e["Type"] {
				case "HttpApi":
					api = props["ApiId"]
				case "Api":
					api = props["RestApiId"]
				}
				if target := RefTarget(api); target != "" {
					add(target, id)
				}
			}
		}
		for _, ref := range refs {
			if ref.kind == "Ref" || ref.kind == "GetAtt" {
				add(id, ref.name)
			}
		}
	}
	out := map[string][]string{}
	for from, tos := range deps {
		for to := range tos {
			out[from] = append(out[from], to)
		}
		sort.Strings(out[from])
	}
	return out
}

// Cycles returns the groups of resources that depend on each other in a
// circle (CloudFormation refuses such a template with "Circular dependency
// between resources").
func (t *Template) Cycles() [][]string {
	deps := t.Dependencies()
	ids := sortedResourceIDs(t)
	index := map[string]int{}
	low := map[string]int{}
	onStack := map[string]bool{}
	var stack []string
	var out [][]string
	n := 0
	var visit func(v string)
	visit = func(v string) {
		index[v], low[v] = n, n
		n++
		stack = append(stack, v)
		onStack[v] = true
		for _, w := range deps[v] {
			if _, seen := index[w]; !seen {
				visit(w)
				low[v] = min(low[v], low[w])
			} else if onStack[w] {
				low[v] = min(low[v], index[w])
			}
		}
		if low[v] == index[v] {
			var comp []string
			for {
				w := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				onStack[w] = false
				comp = append(comp, w)
				if w == v {
					break
				}
			}
			self := len(comp) == 1 && contains(deps[v], v)
			if len(comp) > 1 || self {
				sort.Strings(comp)
				out = append(out, comp)
			}
		}
	}
	for _, id := range ids {
		if _, seen := index[id]; !seen {
			visit(id)
		}
	}
	return out
}

// EstimatedResourceCount is how many resources the stack will hold after
// the SAM transform: a function brings its role (unless it names one), one
// permission per API event (none for the routes of a function that also has
// the API's $default route, whose wildcard permission covers them) and one
// event source mapping per queue or stream event; an HTTP API brings its
// default stage.
func (t *Template) EstimatedResourceCount() int {
	n := 0
	for _, r := range t.Resources {
		n++
		switch r.Type {
		case "AWS::Serverless::Function":
			if _, ok := r.Properties["Role"]; !ok {
				n++
			}
			n += t.generatedPermissions(r)
			for _, ev := range asMap(r.Properties["Events"]) {
				switch asMap(ev)["Type"] {
				case "SQS", "DynamoDB", "Kinesis", "MQ", "MSK", "SelfManagedKafka", "DocumentDB":
					n++
				}
			}
		case "AWS::Serverless::HttpApi":
			if _, ok := r.Properties["StageName"]; !ok {
				n++
			}
		}
	}
	return n
}

// IsDefaultRoute reports whether an HttpApi event's properties make it the
// API's $default route (SAM: neither Path nor Method, or Path "$default").
func IsDefaultRoute(props map[string]any) bool {
	path, _ := props["Path"].(string)
	method, hasMethod := props["Method"].(string)
	if path == "" && !hasMethod {
		return true
	}
	m := strings.ToLower(method)
	return path == "$default" && (m == "any" || m == "x-amazon-apigateway-any-method")
}

// generatedPermissions counts the Lambda permissions SAM adds for a
// function's API events.
func (t *Template) generatedPermissions(r *Resource) int {
	defaultOn := map[string]bool{}
	for _, ev := range asMap(r.Properties["Events"]) {
		e := asMap(ev)
		if e["Type"] == "HttpApi" && IsDefaultRoute(asMap(e["Properties"])) {
			defaultOn[fmt.Sprint(asMap(e["Properties"])["ApiId"])] = true
		}
	}
	n := 0
	for _, ev := range asMap(r.Properties["Events"]) {
		e := asMap(ev)
		switch e["Type"] {
		case "HttpApi":
			props := asMap(e["Properties"])
			if IsDefaultRoute(props) || !defaultOn[fmt.Sprint(props["ApiId"])] {
				n++
			}
		case "Api":
			n++
		}
	}
	return n
}

var logicalID = regexp.MustCompile(`^[A-Za-z0-9]+$`)

var parameterTypes = map[string]bool{
	"String": true, "Number": true, "List<Number>": true, "CommaDelimitedList": true,
	"AWS::SSM::Parameter::Value<String>": true,
}

var topLevelKeys = map[string]bool{
	"AWSTemplateFormatVersion": true, "Description": true, "Metadata": true, "Parameters": true,
	"Rules": true, "Mappings": true, "Conditions": true, "Transform": true, "Resources": true,
	"Outputs": true, "Globals": true,
}

var resourceKeys = map[string]bool{
	"Type": true, "Properties": true, "DependsOn": true, "Condition": true, "DeletionPolicy": true,
	"UpdateReplacePolicy": true, "Metadata": true, "UpdatePolicy": true, "CreationPolicy": true,
}

// statefulTypes lose data when CloudFormation deletes or replaces them.
var statefulTypes = map[string]bool{"AWS::DynamoDB::Table": true, "AWS::S3::Bucket": true}

// Lint runs cheap checks in the spirit of cfn-lint: the template's shape,
// logical ids, parameters and conditions that are declared but unused,
// defaults outside AllowedValues, secrets in outputs, hard-coded partitions,
// data stores without a retain policy, and the stack, output and parameter
// limits.
func (t *Template) Lint() []Problem {
	var probs []Problem
	add := func(where, format string, args ...any) {
		probs = append(probs, Problem{where, fmt.Sprintf(format, args...)})
	}
	for _, k := range sortedKeys(t.Raw) {
		if !topLevelKeys[k] {
			add(k, "unknown top-level section")
		}
	}
	if v, ok := t.Raw["AWSTemplateFormatVersion"]; ok && fmt.Sprint(v) != "2010-09-09" {
		add("AWSTemplateFormatVersion", "must be 2010-09-09 (a string), got %v", v)
	}
	usesSAM := false
	for _, r := range t.Resources {
		usesSAM = usesSAM || strings.HasPrefix(r.Type, "AWS::Serverless::")
	}
	transforms := List(t.Raw["Transform"])
	hasSAM := false
	for _, tr := range transforms {
		hasSAM = hasSAM || tr == ServerlessTransform
	}
	if usesSAM && !hasSAM {
		add("Transform", "the template has AWS::Serverless:: resources but no %s transform", ServerlessTransform)
	}
	if _, ok := t.Raw["Globals"]; ok && !hasSAM {
		add("Globals", "Globals need the %s transform", ServerlessTransform)
	}
	if d, ok := t.Raw["Description"].(string); ok && len(d) > 1024 {
		add("Description", "%d bytes; CloudFormation allows 1024", len(d))
	}
	for _, name := range sortedParamNames(t) {
		if d, ok := t.Parameters[name]["Description"].(string); ok && len(d) > 4000 {
			add("Parameters."+name+".Description", "%d bytes; CloudFormation allows 4000", len(d))
		}
	}
	if len(t.Resources) == 0 {
		add("Resources", "a template needs at least one resource")
	}
	if len(t.Parameters) > MaxParameters {
		add("Parameters", "%d parameters, more than CloudFormation's %d", len(t.Parameters), MaxParameters)
	}
	if len(t.Outputs) > MaxOutputs {
		add("Outputs", "%d outputs, more than CloudFormation's %d", len(t.Outputs), MaxOutputs)
	}
	if n := t.EstimatedResourceCount(); n > MaxResources {
		add("Resources", "about %d resources after the SAM transform, more than CloudFormation's %d per stack", n, MaxResources)
	}
	checkIDs := func(section string, ids []string) {
		for _, id := range ids {
			if !logicalID.MatchString(id) || len(id) > MaxLogicalID {
				add(section+"."+id, "logical ids must be 1 to %d letters and digits", MaxLogicalID)
			}
		}
	}
	var ids []string
	for id := range t.Resources {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	checkIDs("Resources", ids)
	ids = ids[:0]
	for id := range t.Parameters {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	checkIDs("Parameters", ids)
	ids = ids[:0]
	for id := range t.Outputs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	checkIDs("Outputs", ids)
	for _, id := range sortedResourceIDs(t) {
		if _, ok := t.Parameters[id]; ok {
			add("Resources."+id, "a resource and a parameter share this logical id")
		}
	}

	for _, id := range sortedResourceIDs(t) {
		r := t.Resources[id]
		where := "Resources." + id
		for _, k := range sortedKeys(r.Raw) {
			if !resourceKeys[k] {
				add(where, "unknown resource attribute %q", k)
			}
		}
		if r.Type == "" {
			add(where, "no Type")
		} else if !strings.HasPrefix(r.Type, "AWS::") && !strings.HasPrefix(r.Type, "Custom::") {
			add(where, "unexpected Type %q", r.Type)
		}
		for _, k := range []string{"DeletionPolicy", "UpdateReplacePolicy"} {
			if v, ok := r.Raw[k]; ok {
				switch v {
				case "Delete", "Retain", "RetainExceptOnCreate", "Snapshot":
				default:
					add(where+"."+k, "unknown policy %v", v)
				}
			}
		}
		if statefulTypes[r.Type] {
			if r.Raw["DeletionPolicy"] == nil || r.Raw["UpdateReplacePolicy"] == nil {
				add(where, "%s holds data: set DeletionPolicy and UpdateReplacePolicy (Retain) so a stack deletion or replacement cannot destroy it", r.Type)
			}
		}
	}

	// Parameters: types, defaults, use.
	used := map[string]bool{}
	condUsed := map[string]bool{}
	var refs []reference
	for _, k := range []string{"Resources", "Outputs", "Globals", "Conditions", "Rules"} {
		references(t.Raw[k], k, &refs)
	}
	for _, r := range t.Resources {
		if c, ok := r.Raw["Condition"].(string); ok {
			condUsed[c] = true
		}
	}
	for _, o := range t.Outputs {
		if c, ok := o["Condition"].(string); ok {
			condUsed[c] = true
		}
	}
	for _, r := range refs {
		switch r.kind {
		case "Ref":
			used[r.name] = true
		case "Condition", "If":
			condUsed[r.name] = true
		}
	}
	for _, name := range sortedParamNames(t) {
		p := t.Parameters[name]
		where := "Parameters." + name
		typ, _ := p["Type"].(string)
		if !parameterTypes[typ] && !strings.HasPrefix(typ, "AWS::") && !strings.HasPrefix(typ, "List<AWS::") {
			add(where, "unknown parameter Type %q", typ)
		}
		if d, ok := p["Default"]; ok {
			if av, ok := p["AllowedValues"]; ok {
				found := false
				for _, a := range List(av) {
					found = found || fmt.Sprint(a) == fmt.Sprint(d)
				}
				if !found {
					add(where, "Default %v is not one of AllowedValues %v", d, av)
				}
			}
			if pat, ok := p["AllowedPattern"].(string); ok {
				if re, err := regexp.Compile("^(?:" + pat + ")$"); err != nil {
					add(where, "AllowedPattern does not compile: %v", err)
				} else if !re.MatchString(fmt.Sprint(d)) {
					add(where, "Default %q does not match AllowedPattern", d)
				}
			}
		}
		if !used[name] {
			add(where, "declared but never used")
		}
	}
	for _, name := range sortedKeys(t.Conditions) {
		if !condUsed[name] {
			add("Conditions."+name, "declared but never used")
		}
	}

	// Outputs: a value each, no secrets.
	for _, name := range ids {
		o := t.Outputs[name]
		if _, ok := o["Value"]; !ok {
			add("Outputs."+name, "no Value")
		}
		var orefs []reference
		references(o["Value"], "Outputs."+name, &orefs)
		for _, r := range orefs {
			if p, ok := t.Parameters[r.name]; ok && fmt.Sprint(p["NoEcho"]) == "true" {
				add("Outputs."+name, "shows the NoEcho parameter %s", r.name)
			}
		}
	}

	// Hard-coded partitions break GovCloud and China regions.
	walkStrings(t.Raw["Resources"], "Resources", func(at, s string) {
		if strings.Contains(s, "arn:aws:") {
			add(at, "hard-coded partition in %q: use ${AWS::Partition}", s)
		}
	})
	walkStrings(t.Raw["Outputs"], "Outputs", func(at, s string) {
		if strings.Contains(s, "arn:aws:") {
			add(at, "hard-coded partition in %q: use ${AWS::Partition}", s)
		}
	})
	return probs
}

func sortedParamNames(t *Template) []string {
	names := make([]string, 0, len(t.Parameters))
	for n := range t.Parameters {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func walkStrings(v any, at string, fn func(at, s string)) {
	switch x := v.(type) {
	case string:
		fn(at, x)
	case map[string]any:
		for _, k := range sortedKeys(x) {
			walkStrings(x[k], at+"."+k, fn)
		}
	case []any:
		for i, e := range x {
			walkStrings(e, fmt.Sprintf("%s[%d]", at, i), fn)
		}
	}
}

// EnvironmentSize is the size Lambda counts for a set of variables: the
// keys and values as JSON-ish text.
func EnvironmentSize(vars map[string]string) int {
	n := 0
	for k, v := range vars {
		n += len(k) + len(v) + 6
	}
	return n
}
