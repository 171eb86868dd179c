package samtemplate

import (
	"math/rand/v2"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	h "github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/resources"
	"github.com/cirrus-matrix/cirrus/internal/deploycheck"
)

// longForm is what a YAML parser should read back from a tree: plain data
// with the intrinsics in long form, as deploycheck.Parse gives it.
func longForm(v any) any {
	switch x := v.(type) {
	case mapping:
		m := map[string]any{}
		for _, f := range x {
			m[f.key] = longForm(f.value)
		}
		return m
	case list:
		out := []any{}
		for _, e := range x {
			out = append(out, longForm(e))
		}
		return out
	case flow:
		out := []any{}
		for _, e := range x {
			out = append(out, longForm(e))
		}
		return out
	case tagged:
		name := map[string]string{"!Ref": "Ref", "!GetAtt": "Fn::GetAtt", "!Sub": "Fn::Sub"}[x.tag]
		if name == "" {
			name = "Fn::" + strings.TrimPrefix(x.tag, "!")
		}
		arg := longForm(x.value)
		if name == "Fn::GetAtt" {
			id, attr, _ := strings.Cut(arg.(string), ".")
			arg = []any{id, attr}
		}
		return map[string]any{name: arg}
	case folded:
		return string(x)
	case quoted:
		return string(x)
	default:
		return v
	}
}

func repoInput(t *testing.T) Input {
	t.Helper()
	in, err := FromRepo("../..")
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// The printed YAML must read back as exactly the tree it was printed from.
func TestOutputReadsBackAsTheTree(t *testing.T) {
	g := &generator{in: repoInput(t), res: &Result{}}
	doc := g.document()
	out, err := render(header, doc)
	if err != nil {
		t.Fatal(err)
	}
	tm, err := deploycheck.Parse(out)
	if err != nil {
		t.Fatalf("the output does not parse: %v\n%s", err, out)
	}
	want := longForm(doc).(map[string]any)
	for _, k := range sortedKeys(want) {
		if !reflect.DeepEqual(tm.Raw[k], want[k]) {
			t.Errorf("%s reads back as\n%#v\nwant\n%#v", k, tm.Raw[k], want[k])
		}
	}
	if len(tm.Raw) != len(want) {
		t.Errorf("%d top-level keys, want %d", len(tm.Raw), len(want))
	}
}

func TestScalarQuoting(t *testing.T) {
	for _, s := range []string{"", "true", "no", "2010-09-09", "123", "1e3", "*", "|x", "a: b", "#x", "x #y", "- a", "null", "~",
		"{a}", "[a]", "!Ref x", "'q'", `"q"`, "%x", "@x", "`x`", " lead", "trail ", "tab\there", "ünïcode"} {
		y := "k: " + scalar(s) + "\nl: [" + scalar(s) + "]\n"
		tm, err := deploycheck.Parse([]byte(y))
		if err != nil {
			t.Errorf("%q: %v", s, err)
			continue
		}
		if tm.Raw["k"] != s || !reflect.DeepEqual(tm.Raw["l"], []any{s}) {
			t.Errorf("%q printed as %s reads back as %#v / %#v", s, scalar(s), tm.Raw["k"], tm.Raw["l"])
		}
	}
}

// The order of the route table does not matter, and two runs agree.
func TestDeterministic(t *testing.T) {
	in := repoInput(t)
	first, err := Generate(in)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 5 {
		shuffled := in
		shuffled.Routes = slices.Clone(in.Routes)
		r.Shuffle(len(shuffled.Routes), func(i, j int) {
			shuffled.Routes[i], shuffled.Routes[j] = shuffled.Routes[j], shuffled.Routes[i]
		})
		again, err := Generate(shuffled)
		if err != nil {
			t.Fatal(err)
		}
		if string(again.YAML) != string(first.YAML) {
			t.Fatal("the output depends on the order of the route table")
		}
	}
}

// small is a stack of two functions, for the tests below.
func small() Input {
	return Input{
		Routes: []h.Route{
			{Method: http.MethodGet, Path: "/_matrix/client/versions", Function: "ClientA"},
			{Method: http.MethodPost, Path: "/_matrix/client/v3/b", Function: "ClientB"},
			{Method: http.MethodGet, Path: "/_matrix/client/v3/b/{id}", Function: "ClientB"},
		},
		Default:  "ClientA",
		Dirs:     []string{"client-a", "client-b", "homeserver"},
		Comments: map[string]string{"ClientA": "discovery"},
		Settings: map[string]Function{},
	}
}

func generate(t *testing.T, in Input) (*Result, *deploycheck.Template) {
	t.Helper()
	res, err := Generate(in)
	if err != nil {
		t.Fatal(err)
	}
	tm, err := deploycheck.Parse(res.YAML)
	if err != nil {
		t.Fatalf("%v\n%s", err, res.YAML)
	}
	for _, p := range append(tm.Lint(), tm.CheckRefs()...) {
		// Only ClientAuth passes the shared secret on; these stacks lack it.
		if p.Where == "Parameters.RegistrationSharedSecret" {
			continue
		}
		t.Errorf("%s", p)
	}
	if c := tm.Cycles(); len(c) > 0 {
		t.Errorf("cycles %v", c)
	}
	return res, tm
}

func events(tm *deploycheck.Template, fn string) map[string]any {
	return deploycheck.Map(tm.Resources[fn].Properties["Events"])
}

func TestFunctionsAndEvents(t *testing.T) {
	res, tm := generate(t, small())
	if len(res.Problems) > 0 {
		t.Fatalf("problems: %v", res.Problems)
	}
	fns := tm.ResourcesOfType("AWS::Serverless::Function")
	if len(fns) != 2 || fns[0].ID != "ClientA" || fns[1].ID != "ClientB" {
		t.Fatalf("functions %v", fns)
	}
	a := events(tm, "ClientA")
	if _, ok := a[DefaultEventName]; !ok || len(a) != 2 {
		t.Errorf("ClientA events %v, want Default and GetClientVersions", sortedKeys(a))
	}
	if got := sortedKeys(events(tm, "ClientB")); !reflect.DeepEqual(got, []string{"GetClientV3BId", "PostClientV3B"}) {
		t.Errorf("ClientB events %v", got)
	}
	p := tm.Resources["ClientB"].Properties
	if p["MemorySize"] != DefaultMemorySize || p["Timeout"] != DefaultTimeout || p["CodeUri"] != "." || p["ReservedConcurrentExecutions"] != nil {
		t.Errorf("ClientB properties %v", p)
	}
	if tm.Resources["ClientA"].Properties["Description"] != "discovery" {
		t.Errorf("ClientA description from the constant's comment: %v", tm.Resources["ClientA"].Properties["Description"])
	}
}

func TestSettings(t *testing.T) {
	in := small()
	in.Settings = map[string]Function{
		"ClientB": {Description: "bee", MemorySize: 512, Timeout: 20, ReservedConcurrency: 5,
			Environment: map[string]string{"CIRRUS_REGISTRATION_SHARED_SECRET": "RegistrationSharedSecret"}},
		"ClientLater": {MemorySize: 256},
	}
	res, tm := generate(t, in)
	if len(res.Problems) > 0 {
		t.Fatalf("problems: %v", res.Problems)
	}
	p := tm.Resources["ClientB"].Properties
	if p["MemorySize"] != 512 || p["Timeout"] != 20 || p["ReservedConcurrentExecutions"] != 5 || p["Description"] != "bee" {
		t.Errorf("ClientB properties %v", p)
	}
	if !deploycheck.IsRef(deploycheck.Path(p, "Environment", "Variables", "CIRRUS_REGISTRATION_SHARED_SECRET"), "RegistrationSharedSecret") {
		t.Errorf("ClientB environment %v", p["Environment"])
	}
	if len(res.Notes) != 1 || !strings.Contains(res.Notes[0], "ClientLater") {
		t.Errorf("notes %v, want one about ClientLater", res.Notes)
	}
}

func TestWorker(t *testing.T) {
	in := small()
	q := resources.FanoutQueue
	in.Settings = map[string]Function{"FanoutWorker": {Queue: &q}}
	in.Dirs = append(in.Dirs, "fanout-worker")
	res, tm := generate(t, in)
	if len(res.Problems) > 0 {
		t.Fatalf("problems: %v", res.Problems)
	}
	w := tm.Resources["FanoutWorker"]
	if w == nil {
		t.Fatalf("no FanoutWorker in\n%s", res.YAML)
	}
	ev := events(tm, "FanoutWorker")
	if len(ev) != 1 {
		t.Fatalf("worker events %v", ev)
	}
	m := deploycheck.Map(ev["Messages"])
	props := deploycheck.Map(m["Properties"])
	if id, attr := deploycheck.GetAttTarget(props["Queue"]); m["Type"] != "SQS" || id != queueID(q) || attr != "Arn" {
		t.Errorf("worker event %v", m)
	}
	if !reflect.DeepEqual(props["FunctionResponseTypes"], []any{"ReportBatchItemFailures"}) {
		t.Errorf("FunctionResponseTypes %v", props["FunctionResponseTypes"])
	}
	if w.Properties["Timeout"] != int(q.VisibilityTimeout.Seconds())/2 {
		t.Errorf("worker Timeout %v, want half the visibility timeout", w.Properties["Timeout"])
	}
	poll := false
	for _, p := range deploycheck.List(w.Properties["Policies"]) {
		if id, _ := deploycheck.GetAttTarget(deploycheck.Path(p, "SQSPollerPolicy", "QueueName")); id == queueID(q) {
			poll = true
		}
	}
	if !poll {
		t.Errorf("worker has no SQSPollerPolicy on %s", queueID(q))
	}

	// A schedule adds a second event: the sweep.
	in.Settings = map[string]Function{"FanoutWorker": {Queue: &q, Schedule: "rate(5 minutes)"}}
	_, tm = generate(t, in)
	sweep := deploycheck.Map(events(tm, "FanoutWorker")["Sweep"])
	if sweep["Type"] != "Schedule" || deploycheck.Map(sweep["Properties"])["Schedule"] != "rate(5 minutes)" {
		t.Errorf("sweep event %v", sweep)
	}

	// A worker cannot outlast its queue's visibility timeout.
	in.Settings = map[string]Function{"FanoutWorker": {Queue: &q, Timeout: int(q.VisibilityTimeout.Seconds()) + 1}}
	res, _ = generate(t, in)
	if !hasProblem(res, "visibility timeout") {
		t.Errorf("problems %v, want one about the visibility timeout", res.Problems)
	}
}

func hasProblem(res *Result, substr string) bool {
	return slices.ContainsFunc(res.Problems, func(p string) bool { return strings.Contains(p, substr) })
}

// Mismatches between the route table and functions/ are reported by name,
// and the template is still written.
func TestProblems(t *testing.T) {
	in := small()
	in.Dirs = []string{"client-a", "client-sync", "homeserver"}
	in.Routes = append(in.Routes, h.Route{Method: http.MethodGet, Path: "/_matrix/client/v3/b/{id}", Function: "ClientA"})
	in.Settings = map[string]Function{"ClientA": {Timeout: 30}}
	res, err := Generate(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"functions/client-sync/main.go exists, but no route in the route table (core/server) names function ClientSync",
		"function ClientB has 2 routes in the route table (core/server; e.g. POST /_matrix/client/v3/b) but no functions/client-b/main.go",
		"GET /_matrix/client/v3/b/{id} is already routed to ClientB",
		"ClientA: Timeout 30 s",
	} {
		if !hasProblem(res, want) {
			t.Errorf("no problem %q in:\n%s", want, strings.Join(res.Problems, "\n"))
		}
	}
	if len(res.Problems) != 4 {
		t.Errorf("%d problems, want 4:\n%s", len(res.Problems), strings.Join(res.Problems, "\n"))
	}
	if !strings.Contains(string(res.YAML), "  ClientB:\n") {
		t.Errorf("ClientB is missing from the template")
	}
}

// Routes whose names differ only in punctuation get distinct event names
// that do not depend on the order of the route table.
func TestEventNameCollisions(t *testing.T) {
	in := small()
	in.Routes = append(in.Routes,
		h.Route{Method: http.MethodGet, Path: "/_matrix/client/v3/account/3pid", Function: "ClientB"},
		h.Route{Method: http.MethodGet, Path: "/_matrix/client/v3/account_3pid", Function: "ClientB"},
	)
	res, tm := generate(t, in)
	if len(res.Problems) > 0 {
		t.Fatalf("problems: %v", res.Problems)
	}
	names := sortedKeys(events(tm, "ClientB"))
	if len(names) != 4 {
		t.Fatalf("events %v", names)
	}
	n := 0
	for _, e := range names {
		if strings.HasPrefix(e, "GetClientV3Account3pidX") {
			n++
		}
	}
	if n != 2 {
		t.Errorf("events %v: want two GetClientV3Account3pidX… names", names)
	}
}
