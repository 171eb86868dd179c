package cirrus_test

// template.yaml is generated (`make template`, internal/samtemplate) from
// the route table, core/resources, the directories under functions/ and the
// function settings in internal/samtemplate. TestTemplateIsGenerated fails
// while the committed file is stale; TestStackInputsAgree reports what the
// generator found wrong in its input (a function without a directory, a
// directory without routes, …).
//
// The other tests check template.yaml (and build.mk, samconfig.toml and the
// LocalStack files) against the code on their own: they parse the YAML and
// compare it with the route table in core/server, the resource definitions
// in core/resources and the settings infra/config reads, so they also guard
// the generator. Nothing about today's functions, routes or queues is
// written here.

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/awslabs/goformation/v7"
	"github.com/awslabs/goformation/v7/cloudformation"
	"github.com/awslabs/goformation/v7/intrinsics"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/queue"
	"github.com/cirrus-matrix/cirrus/core/resources"
	"github.com/cirrus-matrix/cirrus/core/server"
	"github.com/cirrus-matrix/cirrus/infra/config"
	"github.com/cirrus-matrix/cirrus/internal/deploycheck"
	"github.com/cirrus-matrix/cirrus/internal/samtemplate"
)

const (
	templateFile  = "template.yaml"
	samConfigFile = "samconfig.toml"
	samEnvFile    = "localstack/sam-env.json"
	serverDir     = "core/server" // routes.go is the route table
)

// defaultFunction serves API Gateway's $default route: every request that
// matches no route (unknown paths, wrong methods, OPTIONS preflights) goes to
// it, and its router answers 404/405 M_UNRECOGNIZED in the Matrix format or
// the CORS preflight. internal/testenv's gateway emulator uses the same one.
const defaultFunction = server.FnDefault

// workerFunctions are the functions that serve no route: queue consumers,
// declared in internal/samtemplate/functions.go (a Functions entry with a
// Queue). There are none yet. The tests expect each in template.yaml with an
// SQS event on its queue (batch failures reported, timeout within the
// queue's visibility timeout) and a functions/<kebab-name>/main.go.
var workerFunctions = func() map[string]queue.Spec {
	out := map[string]queue.Spec{}
	for _, w := range samtemplate.Workers() {
		out[w.Name] = w.Queue
	}
	return out
}()

// notDeployed are directories under functions/ that are not Lambda
// functions of the stack: the all-in-one server.
var notDeployed = samtemplate.NotDeployed

// regenerate is the advice for a template that does not match the code.
const regenerate = "run make template"

// queueURLSetting says where infra/config puts each queue's URL. A new queue
// in core/resources needs an entry here (and a setting in infra/config).
var queueURLSetting = map[string]func(*config.Config) string{
	resources.FederationQueue.Name: func(c *config.Config) string { return c.FederationQueueURL },
	resources.FanoutQueue.Name:     func(c *config.Config) string { return c.FanoutQueueURL },
	resources.AppServiceQueue.Name: func(c *config.Config) string { return c.AppServiceQueueURL },
}

// sampleServerNames are valid Matrix server names the template must accept.
var sampleServerNames = []string{"example.org", "matrix.example.org:8448", "localhost:3000", "[::1]:8448", "192.0.2.1"}

// parameterSamples are values tried for parameters without AllowedValues.
var parameterSamples = map[string][]string{
	"RegistrationTokens": {"tok1,tok2"},
	"PublicBaseUrl":      {"https://matrix.example.org"},
	"WellKnownServer":    {"matrix.example.org:443"},
	"LocalEndpointUrl":   {"http://localstack:4566"},
	"MediaUploadOrigin":  {"https://upload.example.org"},
	"SyncOrigin":         {"https://sync.example.org"},
}

// Runtime settings every function must end up with (Globals or its own).
const (
	wantRuntime      = "provided.al2023"
	wantHandler      = "bootstrap"
	wantArchitecture = "arm64"
	apiGatewayLimit  = 30 // seconds API Gateway waits for an integration
)

// DeadLetterRetention is what every dead-letter queue keeps messages for:
// the most SQS allows, so there is time to look at them.
const deadLetterRetention = 14 * 24 * time.Hour

type fixture struct {
	raw   []byte
	tmpl  *deploycheck.Template
	cf    *cloudformation.Template
	apiID string
	// byQueue maps a spec name (main or dead-letter) to its logical id.
	byQueue map[string]string
	tableID string
	bucket  string
}

var (
	fixtureOnce sync.Once
	fixtureVal  *fixture
	fixtureErr  error
)

// load parses template.yaml (once for all tests).
func load(t *testing.T) *fixture {
	t.Helper()
	fixtureOnce.Do(func() {
		raw, err := os.ReadFile(templateFile)
		if err != nil {
			fixtureErr = err
			return
		}
		fixtureVal, fixtureErr = newFixture(raw)
	})
	if fixtureErr != nil {
		t.Fatalf("%s: %v", templateFile, fixtureErr)
	}
	return fixtureVal
}

// newFixture parses a template twice: with goformation (typed SAM
// resources) and with deploycheck (plain YAML with long-form intrinsics, for
// what goformation drops or resolves away), and finds the API, table, bucket
// and queues in it.
func newFixture(raw []byte) (*fixture, error) {
	f := &fixture{raw: raw, byQueue: map[string]string{}}
	var err error
	if f.tmpl, err = deploycheck.Parse(raw); err != nil {
		return nil, err
	}
	// Keep intrinsics as goformation's encoded strings (cloudformation.Ref
	// etc.) instead of letting it resolve them to parameter defaults.
	f.cf, err = goformation.ParseYAMLWithOptions(raw, &intrinsics.ProcessorOptions{
		IntrinsicHandlerOverrides: cloudformation.EncoderIntrinsics,
	})
	if err != nil {
		return nil, fmt.Errorf("goformation: %w", err)
	}
	if apis := f.tmpl.ResourcesOfType("AWS::Serverless::HttpApi"); len(apis) == 1 {
		f.apiID = apis[0].ID
	}
	if ts := f.tmpl.ResourcesOfType("AWS::DynamoDB::Table"); len(ts) == 1 {
		f.tableID = ts[0].ID
	}
	if bs := f.tmpl.ResourcesOfType("AWS::S3::Bucket"); len(bs) == 1 {
		f.bucket = bs[0].ID
	}
	// Queues are recognised by name: QueueName is ${AWS::StackName}-<spec name>.
	env := &deploycheck.Env{Pseudo: map[string]string{"AWS::StackName": "STACK"}}
	for _, q := range f.tmpl.ResourcesOfType("AWS::SQS::Queue") {
		name, err := f.tmpl.Eval(q.Properties["QueueName"], env)
		if s, ok := name.(string); err == nil && ok && strings.HasPrefix(s, "STACK-") {
			f.byQueue[strings.TrimPrefix(s, "STACK-")] = q.ID
		}
	}
	return f, nil
}

func sorted[M ~map[string]V, V any](m M) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

// --- generation ----------------------------------------------------------

// The committed template must be exactly what the generator writes now.
func TestTemplateIsGenerated(t *testing.T) {
	in, err := samtemplate.FromRepo(".")
	if err != nil {
		t.Fatal(err)
	}
	res, err := samtemplate.Generate(in)
	if err != nil {
		t.Fatalf("generating the template: %v", err)
	}
	got, err := os.ReadFile(templateFile)
	if err != nil {
		t.Fatalf("%v: %s", err, regenerate)
	}
	if string(got) == string(res.YAML) {
		return
	}
	gl, wl := strings.Split(string(got), "\n"), strings.Split(string(res.YAML), "\n")
	line := 0
	for line < len(gl) && line < len(wl) && gl[line] == wl[line] {
		line++
	}
	show := func(l []string) string {
		if line < len(l) {
			return l[line]
		}
		return "(end of file)"
	}
	t.Errorf("%s is stale: %s\n(it is generated from the route table (core/server), core/resources, functions/ and internal/samtemplate; do not edit it)\nfirst difference at line %d:\n  committed: %s\n  generated: %s",
		templateFile, regenerate, line+1, show(gl), show(wl))
}

// What the generator finds wrong with its input: a function of the route
// table without a directory under functions/, a directory whose function
// serves no route, settings that Lambda or API Gateway refuse, ….
func TestStackInputsAgree(t *testing.T) {
	in, err := samtemplate.FromRepo(".")
	if err != nil {
		t.Fatal(err)
	}
	res, err := samtemplate.Generate(in)
	if err != nil {
		t.Fatalf("generating the template: %v", err)
	}
	for _, p := range res.Problems {
		t.Error(p)
	}
	for _, n := range res.Notes {
		t.Log("note:", n)
	}
}

// --- the template as a whole -------------------------------------------

func TestTemplateLint(t *testing.T) {
	f := load(t)
	for _, p := range f.tmpl.Lint() {
		t.Errorf("lint: %s", p)
	}
	for _, p := range f.tmpl.CheckRefs() {
		t.Errorf("reference: %s", p)
	}
	for _, c := range f.tmpl.Cycles() {
		t.Errorf("circular dependency between %s: CloudFormation refuses this (remember the SAM transform makes an API depend on every function it routes to, so a function cannot refer to its API)", strings.Join(c, ", "))
	}
	if f.tmpl.Raw["AWSTemplateFormatVersion"] == nil {
		t.Errorf("no AWSTemplateFormatVersion")
	}
	if tr := deploycheck.List(f.tmpl.Raw["Transform"]); len(tr) != 1 || tr[0] != deploycheck.ServerlessTransform {
		t.Errorf("Transform is %v, want %s", f.tmpl.Raw["Transform"], deploycheck.ServerlessTransform)
	}
	// goformation and deploycheck must agree on what the functions are.
	var cfFns []string
	for name := range f.cf.GetAllServerlessFunctionResources() {
		cfFns = append(cfFns, name)
	}
	sort.Strings(cfFns)
	var ours []string
	for _, r := range f.tmpl.ResourcesOfType("AWS::Serverless::Function") {
		ours = append(ours, r.ID)
	}
	if strings.Join(cfFns, ",") != strings.Join(ours, ",") {
		t.Errorf("goformation sees functions %v, the YAML has %v", cfFns, ours)
	}
}

// --- routes ----------------------------------------------------------------

type servedRoute struct{ fn, event string }

func TestTemplateRoutesMatchRouteTable(t *testing.T) {
	f := load(t)
	if f.apiID == "" {
		t.Fatalf("want exactly one AWS::Serverless::HttpApi, found %d", len(f.tmpl.ResourcesOfType("AWS::Serverless::HttpApi")))
	}
	apiRef := cloudformation.Ref(f.apiID)

	// What the route table asks for.
	want := map[string]string{} // "METHOD /path" → function
	var order []string
	for _, r := range server.RouteTable() {
		p, err := deploycheck.APIGatewayPath(r.Path)
		if err != nil {
			t.Errorf("route %s %s (%s): %v", r.Method, r.Path, r.Function, err)
			continue
		}
		m := r.Method
		if m == "" {
			m = "ANY"
		}
		key := m + " " + p
		if prev, dup := want[key]; dup {
			t.Errorf("the route table has %s twice (%s and %s)", key, prev, r.Function)
			continue
		}
		want[key] = r.Function
		order = append(order, key)
	}

	// What the template serves.
	served := map[string]servedRoute{}
	var defaults []string
	perFunction := map[string]int{}
	fns := f.cf.GetAllServerlessFunctionResources()
	for _, name := range sorted(fns) {
		fn := fns[name]
		for _, evName := range sorted(fn.Events) {
			ev := fn.Events[evName]
			where := fmt.Sprintf("%s event %s", name, evName)
			if ev.Type != "HttpApi" {
				if ev.Type == "Api" {
					t.Errorf("%s: a REST API (Api) event; Cirrus uses the HTTP API (HttpApi)", where)
				}
				continue
			}
			if ev.Properties == nil || ev.Properties.HttpApiEvent == nil {
				t.Errorf("%s: goformation could not read its properties", where)
				continue
			}
			h := ev.Properties.HttpApiEvent
			if h.ApiId == nil || *h.ApiId != apiRef {
				t.Errorf("%s: ApiId must be !Ref %s (without it SAM creates a second, implicit API)", where, f.apiID)
			}
			if h.PayloadFormatVersion != nil && *h.PayloadFormatVersion != "2.0" {
				t.Errorf("%s: PayloadFormatVersion %s; algnhsa is set up for 2.0", where, *h.PayloadFormatVersion)
			}
			if h.TimeoutInMillis != nil && *h.TimeoutInMillis > apiGatewayLimit*1000 {
				t.Errorf("%s: TimeoutInMillis %d is above API Gateway's %d s", where, *h.TimeoutInMillis, apiGatewayLimit)
			}
			perFunction[name]++
			props := map[string]any{}
			if h.Path != nil {
				props["Path"] = *h.Path
			}
			if h.Method != nil {
				props["Method"] = *h.Method
			}
			if deploycheck.IsDefaultRoute(props) {
				defaults = append(defaults, name)
				continue
			}
			if h.Path == nil || h.Method == nil {
				t.Errorf("%s: set both Method and Path (or neither, for the $default route)", where)
				continue
			}
			key := strings.ToUpper(*h.Method) + " " + *h.Path
			if prev, dup := served[key]; dup {
				t.Errorf("%s serves %s, already served by %s event %s", where, key, prev.fn, prev.event)
				continue
			}
			served[key] = servedRoute{name, evName}
		}
	}

	// Routes written in the API's DefinitionBody (the upload routes, which
	// the MediaUploadOrigin parameter can send to an upload origin): with
	// the default parameters each must invoke its function.
	params, err := f.tmpl.ParamValues(map[string]any{"ServerName": sampleServerNames[0]})
	if err != nil {
		t.Fatal(err)
	}
	for _, dr := range f.tmpl.DefinitionRoutes(f.apiID) {
		key := dr.Method + " " + dr.Path
		in, err := f.tmpl.ResolveIntegration(dr.Integration, &deploycheck.Env{Params: params})
		switch {
		case err != nil:
			t.Errorf("%s DefinitionBody %s: %v", f.apiID, key, err)
		case in.Type != "aws_proxy" || in.Function == "" || in.PayloadFormatVersion != "2.0":
			t.Errorf("%s DefinitionBody %s: with the default parameters it must invoke a function (aws_proxy, payload 2.0), not %+v", f.apiID, key, in)
		default:
			if prev, dup := served[key]; dup {
				t.Errorf("%s DefinitionBody routes %s, already served by %s event %s", f.apiID, key, prev.fn, prev.event)
				continue
			}
			served[key] = servedRoute{in.Function, "DefinitionBody"}
		}
	}

	for _, key := range order {
		fn := want[key]
		got, ok := served[key]
		switch {
		case !ok:
			method, path, _ := strings.Cut(key, " ")
			t.Errorf("route %s (function %s in the route table) has no HttpApi event in %s: %s (it would add %s %s to %s's Events)",
				key, fn, templateFile, regenerate, method, path, fn)
		case got.fn != fn:
			t.Errorf("route %s is served by %s (event %s) but the route table says %s", key, got.fn, got.event, fn)
		}
	}
	for _, key := range sorted(served) {
		if _, ok := want[key]; !ok {
			t.Errorf("%s event %s routes %s, which is not in the route table (core/server)", served[key].fn, served[key].event, key)
		}
	}

	switch {
	case len(defaults) == 0:
		t.Errorf("no $default route: unknown paths would get API Gateway's plain 404 instead of M_UNRECOGNIZED; it belongs to %s on %s: %s", defaultFunction, f.apiID, regenerate)
	case len(defaults) > 1:
		t.Errorf("$default is routed more than once (%v): API Gateway allows one", defaults)
	case defaults[0] != defaultFunction:
		t.Errorf("$default goes to %s; it must go to %s, whose router answers unmatched requests", defaults[0], defaultFunction)
	}
	if !contains(server.Functions(), defaultFunction) {
		t.Errorf("the default function %s serves no route in the route table", defaultFunction)
	}

	// API Gateway's own rules.
	var paths []string
	for key := range served {
		_, p, _ := strings.Cut(key, " ")
		paths = append(paths, p)
	}
	for _, c := range deploycheck.VariableConflicts(paths) {
		t.Errorf("routes: %s", c)
	}
	if n := len(served) + len(defaults); n > deploycheck.MaxHTTPAPIRoutes {
		t.Errorf("%d routes on one HTTP API; the default quota is %d", n, deploycheck.MaxHTTPAPIRoutes)
	}
	for _, name := range sorted(perFunction) {
		if name == defaultFunction {
			continue // its $default permission covers all its routes
		}
		if size := perFunction[name] * deploycheck.PermissionBytes; size > deploycheck.MaxLambdaPolicy {
			t.Errorf("%s has %d API events: SAM adds one permission each and its resource policy (~%d bytes) would pass Lambda's %d-byte limit; split the function", name, perFunction[name], size, deploycheck.MaxLambdaPolicy)
		}
	}
}

func contains(l []string, s string) bool {
	for _, e := range l {
		if e == s {
			return true
		}
	}
	return false
}

// --- functions, their code and their build ----------------------------------

func TestTemplateFunctionsMatchCode(t *testing.T) {
	f := load(t)
	wantFns := map[string]bool{}
	for _, fn := range server.Functions() {
		wantFns[fn] = true
	}
	for fn := range workerFunctions {
		wantFns[fn] = true
	}
	have := map[string]*deploycheck.Resource{}
	for _, r := range f.tmpl.ResourcesOfType("AWS::Serverless::Function") {
		have[r.ID] = r
	}
	for _, fn := range sorted(wantFns) {
		if have[fn] == nil {
			t.Errorf("function %s (from the route table or a worker in internal/samtemplate) is missing from %s: %s", fn, templateFile, regenerate)
		}
	}
	for _, fn := range sorted(have) {
		if !wantFns[fn] {
			t.Errorf("%s declares function %s, which serves no route in the route table (core/server) and is not a worker in internal/samtemplate: %s", templateFile, fn, regenerate)
		}
	}

	// Every deployable directory is in the template.
	dirs, _ := filepath.Glob("functions/*/main.go")
	for _, d := range dirs {
		dir := filepath.Base(filepath.Dir(d))
		if notDeployed[dir] {
			continue
		}
		if have[deploycheck.Camel(dir)] == nil {
			t.Errorf("functions/%s has no function %s in %s: give it routes in the route table (core/server) (or declare it a worker, or list it in NotDeployed, in internal/samtemplate/functions.go), then %s", dir, deploycheck.Camel(dir), templateFile, regenerate)
		}
	}

	consts := fnConstants(t)
	cfFns := f.cf.GetAllServerlessFunctionResources()
	for _, name := range sorted(have) {
		r := have[name]
		kebab := deploycheck.Kebab(name)
		dir := filepath.Join("functions", kebab)
		if deploycheck.Camel(kebab) != name {
			t.Errorf("%s: build.mk derives logical ids from directory names (%s → %s); choose a name that round-trips (e.g. FederationApi, not FederationAPI)", name, kebab, deploycheck.Camel(kebab))
		}
		mainGo := filepath.Join(dir, "main.go")
		if _, err := os.Stat(mainGo); err != nil {
			t.Errorf("%s: no %s (each function lives in functions/<kebab-case name>)", name, mainGo)
		} else if wantFns[name] && workerFunctions[name].Name == "" {
			checkMainServes(t, mainGo, name, consts)
		}

		cf := cfFns[name]
		if cf == nil {
			continue
		}
		if bm := str(cf.AWSCloudFormationMetadata["BuildMethod"]); bm != "makefile" {
			t.Errorf("%s: Metadata.BuildMethod is %q, want makefile (sam build then runs make build-%s from build.mk)", name, bm, name)
		}
		if cf.CodeUri == nil || cf.CodeUri.String == nil || *cf.CodeUri.String != "." {
			t.Errorf("%s: CodeUri must be . (the whole module is the build context)", name)
		}
		if cf.Role != nil {
			t.Errorf("%s: sets Role; use Policies so SAM builds a role per function", name)
		}

		props := f.tmpl.MergeGlobals(r)
		if got := str(props["Runtime"]); got != wantRuntime {
			t.Errorf("%s: Runtime %q, want %s", name, got, wantRuntime)
		}
		if got := str(props["Handler"]); got != wantHandler {
			t.Errorf("%s: Handler %q, want %s", name, got, wantHandler)
		}
		if got := deploycheck.List(props["Architectures"]); len(got) != 1 || got[0] != wantArchitecture {
			t.Errorf("%s: Architectures %v, want [%s] (set it once, in Globals or the function: SAM concatenates lists)", name, got, wantArchitecture)
		}
		mem, _ := strconv.Atoi(str(props["MemorySize"]))
		if mem < 128 || mem > 10240 {
			t.Errorf("%s: MemorySize %v is outside Lambda's 128–10240 MB", name, props["MemorySize"])
		}
		timeout, err := strconv.Atoi(str(props["Timeout"]))
		if err != nil || timeout < 1 {
			t.Errorf("%s: Timeout %v is not a positive number of seconds", name, props["Timeout"])
		}
		if q, isWorker := workerFunctions[name]; isWorker {
			for _, p := range workerProblems(f, r, q, timeout) {
				t.Error(p)
			}
		} else if timeout >= apiGatewayLimit {
			t.Errorf("%s: Timeout %d s; API Gateway gives up after %d s, so keep it below that", name, timeout, apiGatewayLimit)
		}
	}
}

// fnConstants reads the string constants of core/server (the Fn* ones
// among them, in routes.go and beside it): name → value.
func fnConstants(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(serverDir, "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Go files in %s: %v", serverDir, err)
	}
	out := map[string]string{}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, d := range file.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, s := range gd.Specs {
				vs := s.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i < len(vs.Values) {
						if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
							v, _ := strconv.Unquote(lit.Value)
							out[n.Name] = v
						}
					}
				}
			}
		}
	}
	return out
}

// checkMainServes checks that functions/<dir>/main.go names the function it
// is deployed as (server.FnX or the literal name) and no other.
func checkMainServes(t *testing.T, mainGo, fn string, consts map[string]string) {
	t.Helper()
	file, err := parser.ParseFile(token.NewFileSet(), mainGo, nil, 0)
	if err != nil {
		t.Errorf("%s: %v", mainGo, err)
		return
	}
	named := map[string]bool{}
	ast.Inspect(file, func(n ast.Node) bool {
		switch x := n.(type) {
		case *ast.SelectorExpr:
			if pkg, ok := x.X.(*ast.Ident); ok && pkg.Name == "server" {
				if v, ok := consts[x.Sel.Name]; ok {
					named[v] = true
				}
			}
		case *ast.BasicLit:
			if x.Kind == token.STRING {
				if v, err := strconv.Unquote(x.Value); err == nil {
					named[v] = true
				}
			}
		}
		return true
	})
	if !named[fn] {
		t.Errorf("%s does not name function %s (e.g. lambdahttp.Main(server.Fn…)), so it would not serve %s's routes", mainGo, fn, fn)
	}
	for _, other := range server.Functions() {
		if other != fn && named[other] {
			t.Errorf("%s also names function %s: each directory builds one function", mainGo, other)
		}
	}
}

// workerProblems checks a queue consumer: one SQS event on its queue,
// partial batch failures on, and a timeout that fits in the queue's
// visibility timeout (or Lambda refuses the event source mapping).
func workerProblems(f *fixture, r *deploycheck.Resource, q queue.Spec, timeout int) []string {
	var probs []string
	add := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	qid := f.byQueue[q.Name]
	found := 0
	events := deploycheck.Map(r.Properties["Events"])
	for _, evName := range sorted(events) {
		e := deploycheck.Map(events[evName])
		if e["Type"] != "SQS" {
			if e["Type"] == "HttpApi" || e["Type"] == "Api" {
				add("%s event %s: a worker serves no route", r.ID, evName)
			}
			continue
		}
		found++
		props := deploycheck.Map(e["Properties"])
		if id, attr := deploycheck.GetAttTarget(props["Queue"]); qid == "" || id != qid || attr != "Arn" {
			add("%s event %s: Queue must be !GetAtt %s.Arn (the queue named ${AWS::StackName}-%s)", r.ID, evName, qid, q.Name)
		}
		// goformation drops FunctionResponseTypes, so this reads the YAML.
		if rt := deploycheck.List(props["FunctionResponseTypes"]); len(rt) != 1 || rt[0] != "ReportBatchItemFailures" {
			add("%s event %s: FunctionResponseTypes must be [ReportBatchItemFailures], so one bad message does not send its whole batch back", r.ID, evName)
		}
		if props["BatchSize"] != nil {
			if bs, err := strconv.Atoi(str(props["BatchSize"])); err != nil || bs < 1 || (q.FIFO && bs > queue.MaxBatch) {
				add("%s event %s: BatchSize %v; FIFO queues take 1 to %d", r.ID, evName, props["BatchSize"], queue.MaxBatch)
			}
		}
	}
	if found != 1 {
		add("%s: want one SQS event (on %s), found %d", r.ID, q.Name, found)
	}
	if time.Duration(timeout)*time.Second > q.VisibilityTimeout {
		add("%s: Timeout %d s is longer than %s's visibility timeout (%s): Lambda refuses such a mapping", r.ID, timeout, q.Name, q.VisibilityTimeout)
	}
	return probs
}

func TestBuildTargetsForEveryFunction(t *testing.T) {
	f := load(t)
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	artifacts := t.TempDir()
	for _, r := range f.tmpl.ResourcesOfType("AWS::Serverless::Function") {
		target := "build-" + r.ID
		out, err := exec.Command("make", "-n", target, "ARTIFACTS_DIR="+artifacts).CombinedOutput()
		if err != nil {
			t.Errorf("make -n %s: %v\n%s(build.mk generates build-<Name> for every functions/<kebab-name>/main.go)", target, err, out)
			continue
		}
		text := string(out)
		for _, want := range []string{
			"GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0", "-tags lambda.norpc",
			"-o " + artifacts + "/bootstrap", "./functions/" + deploycheck.Kebab(r.ID),
		} {
			if !strings.Contains(text, want) {
				t.Errorf("make -n %s does not contain %q:\n%s", target, want, text)
			}
		}
	}
}

// --- permissions -----------------------------------------------------------

// allowedS3Actions are what an inline statement may grant, and only on the
// media bucket and its objects.
var allowedS3Actions = map[string]bool{"s3:GetObject": true, "s3:PutObject": true, "s3:DeleteObject": true, "s3:AbortMultipartUpload": true, "s3:ListBucket": true}

func TestTemplatePoliciesAreLeastPrivilege(t *testing.T) {
	f := load(t)
	if f.tableID == "" || f.bucket == "" {
		t.Fatalf("want exactly one table and one bucket")
	}
	for _, r := range f.tmpl.ResourcesOfType("AWS::Serverless::Function") {
		where := r.ID + ".Policies"
		dynamo := false
		sqsSend := map[string]bool{}
		s3Read, s3Write := false, false
		for i, p := range deploycheck.List(r.Properties["Policies"]) {
			at := fmt.Sprintf("%s[%d]", where, i)
			m, ok := p.(map[string]any)
			if !ok {
				t.Errorf("%s: %v is a managed policy; write the statements (least privilege)", at, p)
				continue
			}
			if len(m) != 1 {
				t.Errorf("%s: one policy template or Statement per list item", at)
				continue
			}
			for kind, arg := range m {
				args := deploycheck.Map(arg)
				switch kind {
				case "DynamoDBCrudPolicy":
					if !deploycheck.IsRef(args["TableName"], f.tableID) {
						t.Errorf("%s: DynamoDBCrudPolicy must name !Ref %s", at, f.tableID)
					}
					dynamo = true
				case "SQSSendMessagePolicy":
					id, attr := deploycheck.GetAttTarget(args["QueueName"])
					if attr != "QueueName" {
						t.Errorf("%s: SQSSendMessagePolicy QueueName must be !GetAtt <queue>.QueueName", at)
					}
					sqsSend[id] = true
				case "SQSPollerPolicy":
					id, attr := deploycheck.GetAttTarget(args["QueueName"])
					if _, isWorker := workerFunctions[r.ID]; !isWorker || attr != "QueueName" || id != f.byQueue[workerFunctions[r.ID].Name] {
						t.Errorf("%s: SQSPollerPolicy only for a worker, on its own queue", at)
					}
				case "Statement":
					for j, st := range deploycheck.List(arg) {
						sat := fmt.Sprintf("%s.Statement[%d]", at, j)
						r, w := checkStatement(t, f, sat, deploycheck.Map(st))
						s3Read, s3Write = s3Read || r, s3Write || w
					}
				default:
					t.Errorf("%s: policy %s is not one this test knows; extend TestTemplatePoliciesAreLeastPrivilege if it is needed", at, kind)
				}
			}
		}
		if !dynamo {
			t.Errorf("%s: no DynamoDBCrudPolicy on %s", where, f.tableID)
		}
		for _, q := range resources.Queues {
			if id := f.byQueue[q.Name]; !sqsSend[id] {
				t.Errorf("%s: no SQSSendMessagePolicy for %s (%s)", where, q.Name, id)
			}
		}
		for id := range sqsSend {
			if !isMainQueue(f, id) {
				t.Errorf("%s: SQSSendMessagePolicy on %s, which is not one of resources.Queues", where, id)
			}
		}
		if !s3Read || !s3Write {
			t.Errorf("%s: want s3:GetObject and s3:PutObject on the objects of %s", where, f.bucket)
		}
	}
}

func isMainQueue(f *fixture, id string) bool {
	for _, q := range resources.Queues {
		if f.byQueue[q.Name] == id {
			return true
		}
	}
	return false
}

// checkStatement allows only S3 object and list actions on the media bucket.
func checkStatement(t *testing.T, f *fixture, at string, st map[string]any) (read, write bool) {
	t.Helper()
	if st["Effect"] != "Allow" {
		return false, false
	}
	bucketArn := str(deploycheck.Placeholder(f.bucket, "Arn"))
	for _, a := range deploycheck.List(st["Action"]) {
		action := str(a)
		if !allowedS3Actions[action] {
			t.Errorf("%s: action %s is not allowed here (allowed: S3 object reads and writes on the media bucket)", at, action)
		}
		read = read || action == "s3:GetObject"
		write = write || action == "s3:PutObject"
	}
	res, err := f.tmpl.Eval(st["Resource"], &deploycheck.Env{Params: map[string]any{}})
	if err != nil {
		t.Errorf("%s: Resource: %v", at, err)
		return read, write
	}
	for _, r := range deploycheck.List(res) {
		s := str(r)
		if s != bucketArn && s != bucketArn+"/*" {
			t.Errorf("%s: Resource %s; only %s (for ListBucket) and its objects are allowed", at, s, f.bucket)
		}
	}
	return read, write
}

// --- data stores -----------------------------------------------------------

func TestTemplateTableMatchesResources(t *testing.T) {
	f := load(t)
	tables := f.tmpl.ResourcesOfType("AWS::DynamoDB::Table")
	if len(tables) != 1 {
		t.Fatalf("want one AWS::DynamoDB::Table, found %d", len(tables))
	}
	r := tables[0]
	p := r.Properties
	spec := resources.Table
	where := "Resources." + r.ID
	if p["TableName"] != nil {
		t.Errorf("%s: no TableName please: a generated name lets several stacks share an account (CIRRUS_TABLE carries it)", where)
	}
	if p["BillingMode"] != "PAY_PER_REQUEST" {
		t.Errorf("%s: BillingMode %v, want PAY_PER_REQUEST", where, p["BillingMode"])
	}
	attrs := map[string]string{}
	for _, a := range deploycheck.List(p["AttributeDefinitions"]) {
		m := deploycheck.Map(a)
		attrs[str(m["AttributeName"])] = str(m["AttributeType"])
	}
	wantAttrs := map[string]string{spec.PK: "S", spec.SK: "S", spec.IndexPK: "S", spec.IndexSK: "S"}
	if fmt.Sprint(attrs) != fmt.Sprint(wantAttrs) {
		t.Errorf("%s: AttributeDefinitions %v, want exactly %v (CloudFormation refuses definitions no key uses)", where, attrs, wantAttrs)
	}
	if got := keySchema(p["KeySchema"]); got != spec.PK+" HASH, "+spec.SK+" RANGE" {
		t.Errorf("%s: KeySchema %s, want %s HASH, %s RANGE", where, got, spec.PK, spec.SK)
	}
	gsis := deploycheck.List(p["GlobalSecondaryIndexes"])
	if len(gsis) != 1 {
		t.Errorf("%s: want one global secondary index (%s), found %d", where, spec.Index, len(gsis))
	} else {
		g := deploycheck.Map(gsis[0])
		if g["IndexName"] != spec.Index {
			t.Errorf("%s: index %v, want %s", where, g["IndexName"], spec.Index)
		}
		if got := keySchema(g["KeySchema"]); got != spec.IndexPK+" HASH, "+spec.IndexSK+" RANGE" {
			t.Errorf("%s: index KeySchema %s, want %s HASH, %s RANGE", where, got, spec.IndexPK, spec.IndexSK)
		}
		if pt := deploycheck.Path(g, "Projection", "ProjectionType"); pt != "ALL" {
			t.Errorf("%s: index ProjectionType %v, want ALL", where, pt)
		}
	}
	if ttl := deploycheck.Map(p["TimeToLiveSpecification"]); ttl["AttributeName"] != spec.TTLAttr || ttl["Enabled"] != true {
		t.Errorf("%s: TimeToLiveSpecification %v, want %s enabled", where, ttl, spec.TTLAttr)
	}
	if deploycheck.Path(p, "PointInTimeRecoverySpecification", "PointInTimeRecoveryEnabled") != true {
		t.Errorf("%s: point-in-time recovery is off", where)
	}
	if deploycheck.Path(p, "SSESpecification", "SSEEnabled") != true {
		t.Errorf("%s: SSESpecification.SSEEnabled is not true", where)
	}
	if r.Raw["DeletionPolicy"] != "Retain" || r.Raw["UpdateReplacePolicy"] != "Retain" {
		t.Errorf("%s: DeletionPolicy and UpdateReplacePolicy must be Retain: the table is every user's data", where)
	}
}

func keySchema(v any) string {
	var parts []string
	for _, k := range deploycheck.List(v) {
		m := deploycheck.Map(k)
		parts = append(parts, str(m["AttributeName"])+" "+str(m["KeyType"]))
	}
	return strings.Join(parts, ", ")
}

func TestTemplateQueuesMatchResources(t *testing.T) {
	f := load(t)
	known := map[string]bool{}
	for _, q := range resources.Queues {
		id, dlqID := f.byQueue[q.Name], f.byQueue[q.DeadLetterName()]
		if id == "" {
			t.Errorf("queue %s: no AWS::SQS::Queue with QueueName !Sub \"${AWS::StackName}-%s\"", q.Name, q.Name)
			continue
		}
		known[id] = true
		p := f.tmpl.Resources[id].Properties
		where := "Resources." + id
		if p["FifoQueue"] != q.FIFO && !(p["FifoQueue"] == nil && !q.FIFO) {
			t.Errorf("%s: FifoQueue %v, want %v", where, p["FifoQueue"], q.FIFO)
		}
		if q.FIFO && p["ContentBasedDeduplication"] != false {
			t.Errorf("%s: ContentBasedDeduplication must be false: senders set deduplication ids", where)
		}
		checkSeconds(t, where, "VisibilityTimeout", p["VisibilityTimeout"], q.VisibilityTimeout)
		checkSeconds(t, where, "MessageRetentionPeriod", p["MessageRetentionPeriod"], q.Retention)
		rp := deploycheck.Map(p["RedrivePolicy"])
		if tid, attr := deploycheck.GetAttTarget(rp["deadLetterTargetArn"]); tid == "" || tid != dlqID || attr != "Arn" {
			t.Errorf("%s: RedrivePolicy.deadLetterTargetArn must be !GetAtt of the queue named ${AWS::StackName}-%s", where, q.DeadLetterName())
		}
		if n, err := strconv.Atoi(str(rp["maxReceiveCount"])); err != nil || n != q.MaxReceives {
			t.Errorf("%s: RedrivePolicy.maxReceiveCount %v, want %d (MaxReceives)", where, rp["maxReceiveCount"], q.MaxReceives)
		}
		if dlqID == "" {
			t.Errorf("queue %s: no dead-letter queue named ${AWS::StackName}-%s", q.Name, q.DeadLetterName())
			continue
		}
		known[dlqID] = true
		dp := f.tmpl.Resources[dlqID].Properties
		dwhere := "Resources." + dlqID
		if dp["FifoQueue"] != p["FifoQueue"] {
			t.Errorf("%s: FifoQueue %v; a dead-letter queue must be of its queue's type", dwhere, dp["FifoQueue"])
		}
		checkSeconds(t, dwhere, "MessageRetentionPeriod", dp["MessageRetentionPeriod"], deadLetterRetention)
		if deadLetterRetention < q.Retention {
			t.Errorf("%s keeps messages less long than %s: they would expire on arrival", q.DeadLetterName(), q.Name)
		}
		if dp["RedrivePolicy"] != nil {
			t.Errorf("%s: a dead-letter queue has no redrive policy of its own", dwhere)
		}
	}
	for _, q := range f.tmpl.ResourcesOfType("AWS::SQS::Queue") {
		if !known[q.ID] {
			t.Errorf("Resources.%s is not a queue of core/resources.Queues nor a dead-letter queue of one (its QueueName must be !Sub \"${AWS::StackName}-<name>\")", q.ID)
		}
		if q.Properties["SqsManagedSseEnabled"] != true {
			t.Errorf("Resources.%s: SqsManagedSseEnabled should be true", q.ID)
		}
	}
}

func checkSeconds(t *testing.T, where, name string, v any, want time.Duration) {
	t.Helper()
	n, err := strconv.Atoi(str(v))
	if err != nil || time.Duration(n)*time.Second != want {
		t.Errorf("%s: %s %v, want %d (%s)", where, name, v, int64(want/time.Second), want)
	}
}

func TestTemplateBucketIsPrivate(t *testing.T) {
	f := load(t)
	if f.bucket == "" {
		t.Fatalf("want exactly one AWS::S3::Bucket (media)")
	}
	r := f.tmpl.Resources[f.bucket]
	p := r.Properties
	where := "Resources." + f.bucket
	if p["BucketName"] != nil {
		t.Errorf("%s: no BucketName please: bucket names are global (CIRRUS_MEDIA_BUCKET carries the generated one)", where)
	}
	for _, k := range []string{"BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"} {
		if deploycheck.Path(p, "PublicAccessBlockConfiguration", k) != true {
			t.Errorf("%s: PublicAccessBlockConfiguration.%s must be true", where, k)
		}
	}
	enc := deploycheck.List(deploycheck.Path(p, "BucketEncryption", "ServerSideEncryptionConfiguration"))
	if len(enc) != 1 || deploycheck.Path(enc[0], "ServerSideEncryptionByDefault", "SSEAlgorithm") != "AES256" {
		t.Errorf("%s: want BucketEncryption with SSEAlgorithm AES256", where)
	}
	methods := map[string]bool{}
	for _, rule := range deploycheck.List(deploycheck.Path(p, "CorsConfiguration", "CorsRules")) {
		if !contains(toStrings(deploycheck.Path(rule, "AllowedOrigins")), "*") {
			continue
		}
		for _, m := range toStrings(deploycheck.Path(rule, "AllowedMethods")) {
			methods[m] = true
		}
	}
	if !methods["GET"] || !methods["PUT"] {
		t.Errorf("%s: browsers need a CORS rule allowing GET and PUT from any origin (presigned downloads and uploads)", where)
	}
	if r.Raw["DeletionPolicy"] != "Retain" || r.Raw["UpdateReplacePolicy"] != "Retain" {
		t.Errorf("%s: DeletionPolicy and UpdateReplacePolicy must be Retain: the bucket holds users' media", where)
	}
	// Nothing may grant public access through a bucket policy.
	for _, bp := range f.tmpl.ResourcesOfType("AWS::S3::BucketPolicy") {
		for _, st := range deploycheck.List(deploycheck.Path(bp.Properties, "PolicyDocument", "Statement")) {
			if deploycheck.Path(st, "Effect") == "Allow" {
				t.Errorf("Resources.%s: bucket policies here may only deny", bp.ID)
			}
		}
	}
}

func toStrings(v any) []string {
	var out []string
	for _, e := range deploycheck.List(v) {
		out = append(out, str(e))
	}
	return out
}

// --- environment ------------------------------------------------------------

// paramVariations returns the parameter sets to try: the defaults (with the
// first sample server name), then each parameter varied alone over its
// AllowedValues or samples.
func paramVariations(t *testing.T, tm *deploycheck.Template) []map[string]any {
	t.Helper()
	base := map[string]any{}
	for name, p := range tm.Parameters {
		if _, ok := p["Default"]; !ok && name != "ServerName" {
			t.Fatalf("parameter %s has no default: give it one or a sample in this test", name)
		}
	}
	base["ServerName"] = sampleServerNames[0]
	out := []map[string]any{base}
	vary := func(name, value string) {
		v := map[string]any{}
		for k, x := range base {
			v[k] = x
		}
		v[name] = value
		out = append(out, v)
	}
	for _, name := range sorted(tm.Parameters) {
		p := tm.Parameters[name]
		values := toStrings(p["AllowedValues"])
		if name == "ServerName" {
			values = sampleServerNames[1:]
		}
		values = append(values, parameterSamples[name]...)
		for _, val := range values {
			vary(name, val)
		}
	}
	return out
}

// rulesPass evaluates the template's Rules for one parameter set.
func rulesPass(t *testing.T, tm *deploycheck.Template, env *deploycheck.Env) (bool, string) {
	t.Helper()
	for _, name := range sorted(tm.Rules) {
		rule := deploycheck.Map(tm.Rules[name])
		if c, ok := rule["RuleCondition"]; ok {
			v, err := tm.Eval(c, env)
			if err != nil {
				t.Fatalf("Rules.%s.RuleCondition: %v", name, err)
			}
			if v != true {
				continue
			}
		}
		for i, a := range deploycheck.List(rule["Assertions"]) {
			v, err := tm.Eval(deploycheck.Map(a)["Assert"], env)
			if err != nil {
				t.Fatalf("Rules.%s.Assertions[%d]: %v", name, i, err)
			}
			if v != true {
				return false, name
			}
		}
	}
	return true, ""
}

func TestTemplateEnvironmentSatisfiesConfig(t *testing.T) {
	f := load(t)
	if f.tableID == "" || f.bucket == "" {
		t.Fatalf("want exactly one table and one bucket")
	}
	for _, q := range resources.Queues {
		if queueURLSetting[q.Name] == nil {
			t.Fatalf("queue %s has no entry in queueURLSetting: say which infra/config field holds its URL", q.Name)
		}
	}
	// Each finding is reported once per function, with the first parameter
	// set that shows it.
	seen := map[string]bool{}
	report := func(fn string, params map[string]any, msg string) {
		if key := fn + "\x00" + msg; !seen[key] {
			seen[key] = true
			t.Errorf("%s: %s (parameters %v)", fn, msg, params)
		}
	}
	fns := f.tmpl.ResourcesOfType("AWS::Serverless::Function")
	for _, params := range paramVariations(t, f.tmpl) {
		env := &deploycheck.Env{}
		var err error
		if env.Params, err = f.tmpl.ParamValues(params); err != nil {
			t.Fatal(err)
		}
		ok, rule := rulesPass(t, f.tmpl, env)
		for _, r := range fns {
			vars, err := functionEnv(f.tmpl, r, env)
			if err != nil {
				report(r.ID, params, "environment: "+err.Error())
				continue
			}
			read := map[string]bool{}
			cfg, err := config.Load(func(k string) string { read[k] = true; return vars[k] })
			if !ok {
				if err == nil {
					report(r.ID, params, "rule "+rule+" rejects these parameters, but infra/config accepts them: the rule is stricter than the code")
				}
				continue
			}
			if err != nil {
				report(r.ID, params, "infra/config refuses the environment: "+err.Error())
				continue
			}
			for _, msg := range checkConfig(f, params, vars, read, cfg) {
				report(r.ID, params, msg)
			}
		}
	}
}

// functionEnv evaluates a function's variables (Globals merged in).
func functionEnv(tm *deploycheck.Template, r *deploycheck.Resource, env *deploycheck.Env) (map[string]string, error) {
	raw := deploycheck.Path(tm.MergeGlobals(r), "Environment", "Variables")
	v, err := tm.Eval(raw, env)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for k, x := range deploycheck.Map(v) {
		if _, isMap := x.(map[string]any); isMap {
			return nil, fmt.Errorf("%s is not a string", k)
		}
		out[k] = str(x)
	}
	return out, nil
}

// checkConfig compares what infra/config made of a function's environment
// with the stack's resources and parameters.
func checkConfig(f *fixture, params map[string]any, vars map[string]string, read map[string]bool, cfg *config.Config) []string {
	var probs []string
	add := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	if cfg.Storage != config.StorageAWS {
		add("storage %q, want %q", cfg.Storage, config.StorageAWS)
	}
	if cfg.CreateAWSResources {
		add("CIRRUS_AWS_CREATE_RESOURCES is for local runs only; the stack creates the resources")
	}
	if want := deploycheck.Placeholder(f.tableID, ""); cfg.Table != want {
		add("table %q, want !Ref %s (without CIRRUS_TABLE the code falls back to %q)", cfg.Table, f.tableID, resources.Table.Name)
	}
	if want := deploycheck.Placeholder(f.bucket, ""); cfg.MediaBucket != want {
		add("media bucket %q, want !Ref %s (without CIRRUS_MEDIA_BUCKET the code falls back to %q)", cfg.MediaBucket, f.bucket, resources.MediaBucket)
	}
	for _, q := range resources.Queues {
		want := deploycheck.Placeholder(f.byQueue[q.Name], "")
		if got := queueURLSetting[q.Name](cfg); got != want {
			add("URL of %s is %q, want !Ref %s", q.Name, got, f.byQueue[q.Name])
		}
		if ev := deploycheck.QueueEnvVar(q.Name); vars[ev] != want {
			add("%s = %q; the LocalStack files assume this variable carries %s's URL", ev, vars[ev], q.Name)
		}
	}
	if cfg.Server.Client.ServerName != str(params["ServerName"]) {
		add("server name %q, want the ServerName parameter %q", cfg.Server.Client.ServerName, params["ServerName"])
	}
	if cfg.LogLevel != str(f.tmplParam(params, "LogLevel")) {
		add("log level %q, want the LogLevel parameter", cfg.LogLevel)
	}
	base := cfg.Server.Client.PublicBaseURL
	if !strings.HasPrefix(base, "https://") && !strings.HasPrefix(base, "http://") {
		add("public base URL %q is not a URL", base)
	}
	if strings.Contains(base, "127.0.0.1") {
		add("public base URL %q is the local default: set CIRRUS_PUBLIC_BASEURL", base)
	}
	for _, k := range sorted(vars) {
		if strings.HasPrefix(k, "CIRRUS_") && !read[k] {
			add("sets %s, which infra/config never reads (a typo, or a setting that was removed?)", k)
		}
	}
	if n := deploycheck.EnvironmentSize(vars); n > deploycheck.MaxEnvironmentSize {
		add("environment is %d bytes; Lambda allows %d", n, deploycheck.MaxEnvironmentSize)
	}
	return probs
}

func (f *fixture) tmplParam(params map[string]any, name string) any {
	if v, ok := params[name]; ok {
		return v
	}
	return f.tmpl.Parameters[name]["Default"]
}

// The ServerName pattern must accept what the code accepts (and the
// samples), so a deploy fails at the parameter rather than at cold start.
func TestServerNameParameterMatchesCode(t *testing.T) {
	f := load(t)
	p := f.tmpl.Parameters["ServerName"]
	if p == nil {
		t.Fatal("no ServerName parameter")
	}
	if _, hasDefault := p["Default"]; hasDefault {
		t.Errorf("ServerName must have no default: it is permanent, so the deployer must choose it")
	}
	pat, _ := p["AllowedPattern"].(string)
	if pat == "" {
		t.Skip("no AllowedPattern")
	}
	re := regexp.MustCompile("^(?:" + pat + ")$")
	for _, name := range append(sampleServerNames, "", "bad name", "example.org:", "exa_mple.org/x") {
		if re.MatchString(name) != id.ValidateServerName(name) {
			t.Errorf("ServerName %q: AllowedPattern says %v, the code says %v", name, re.MatchString(name), id.ValidateServerName(name))
		}
	}
}

// --- outputs ----------------------------------------------------------------

func TestTemplateOutputs(t *testing.T) {
	f := load(t)
	refs := map[string]bool{}
	for _, o := range f.tmpl.Outputs {
		if id := deploycheck.RefTarget(o["Value"]); id != "" {
			refs[id] = true
		}
	}
	api := f.tmpl.Outputs["ApiUrl"]
	if api == nil {
		t.Errorf("no ApiUrl output")
	} else if v, err := f.tmpl.Eval(api["Value"], &deploycheck.Env{}); err != nil || !strings.Contains(str(v), deploycheck.Placeholder(f.apiID, "").(string)) {
		t.Errorf("ApiUrl does not name the API %s: %v %v", f.apiID, v, err)
	}
	for name, id := range map[string]string{"TableName": f.tableID, "MediaBucketName": f.bucket} {
		if o := f.tmpl.Outputs[name]; o == nil || !deploycheck.IsRef(o["Value"], id) {
			t.Errorf("output %s must be !Ref %s", name, id)
		}
	}
	for _, q := range f.tmpl.ResourcesOfType("AWS::SQS::Queue") {
		if !refs[q.ID] {
			t.Errorf("no output gives the URL of %s (!Ref %s)", q.ID, q.ID)
		}
	}
}

// --- samconfig.toml and the LocalStack files --------------------------------

// readTOML reads the simple key = value TOML samconfig uses: section.key → value.
func readTOML(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	section := ""
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]") + "."
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s:%d: not key = value", path, i+1)
			}
			out[section+strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out
}

func TestSAMConfig(t *testing.T) {
	f := load(t)
	c := readTOML(t, samConfigFile)
	unq := func(k string) string {
		v, err := strconv.Unquote(c[k])
		if err != nil {
			return c[k]
		}
		return v
	}
	if unq("version") != "0.1" {
		t.Errorf("version = %s, want 0.1", c["version"])
	}
	stack := unq("default.global.parameters.stack_name")
	if stack == "" {
		stack = unq("default.deploy.parameters.stack_name")
	}
	if stack != "cirrus" {
		t.Errorf("stack_name %q, want cirrus", stack)
	}
	// Queue names are <stack>-<queue>; SQS allows 80 characters.
	for _, q := range resources.Queues {
		if n := len(stack) + 1 + len(q.DeadLetterName()); n > 80 {
			t.Errorf("queue name %s-%s is %d characters; SQS allows 80", stack, q.DeadLetterName(), n)
		}
	}
	d := "default.deploy.parameters."
	if unq(d+"region") == "" {
		t.Errorf("no region in %s", samConfigFile)
	}
	caps := strings.Fields(unq(d + "capabilities"))
	if !contains(caps, "CAPABILITY_IAM") {
		t.Errorf("capabilities %v: SAM creates a role per function, which needs CAPABILITY_IAM", caps)
	}
	if c[d+"resolve_s3"] != "true" || c[d+"confirm_changeset"] != "true" {
		t.Errorf("want resolve_s3 = true and confirm_changeset = true")
	}
	overrides := parseOverrides(unq(d + "parameter_overrides"))
	for k, v := range overrides {
		p, ok := f.tmpl.Parameters[k]
		if !ok {
			t.Errorf("parameter_overrides sets %s, which is not a template parameter", k)
			continue
		}
		if str(p["NoEcho"]) == "true" {
			t.Errorf("parameter_overrides holds the secret %s: pass it on the command line", k)
		}
		if av := toStrings(p["AllowedValues"]); len(av) > 0 && !contains(av, v) {
			t.Errorf("parameter_overrides %s=%s is not one of %v", k, v, av)
		}
	}
	for name, p := range f.tmpl.Parameters {
		if _, hasDefault := p["Default"]; !hasDefault {
			if _, set := overrides[name]; !set {
				t.Errorf("parameter_overrides must set %s (it has no default)", name)
			}
		}
	}
	if sn := overrides["ServerName"]; !id.ValidateServerName(sn) {
		t.Errorf("parameter_overrides ServerName %q is not a valid server name", sn)
	}
}

// parseOverrides reads Key=Value or Key="Value" pairs separated by spaces.
func parseOverrides(s string) map[string]string {
	out := map[string]string{}
	re := regexp.MustCompile(`(\w+)=("(?:[^"\\]|\\.)*"|\S*)`)
	for _, m := range re.FindAllStringSubmatch(s, -1) {
		v := m[2]
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		}
		out[m[1]] = v
	}
	return out
}

// sam local only overrides variables the template declares, so every key of
// the LocalStack env file must be declared for every function.
func TestLocalStackEnvFileMatchesTemplate(t *testing.T) {
	f := load(t)
	data, err := os.ReadFile(samEnvFile)
	if err != nil {
		t.Fatal(err)
	}
	var file map[string]map[string]string
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatalf("%s: %v", samEnvFile, err)
	}
	for scope, vars := range file {
		for _, r := range f.tmpl.ResourcesOfType("AWS::Serverless::Function") {
			if scope != "Parameters" && scope != r.ID {
				continue
			}
			declared := deploycheck.Map(deploycheck.Path(f.tmpl.MergeGlobals(r), "Environment", "Variables"))
			for k := range vars {
				if _, ok := declared[k]; !ok {
					t.Errorf("%s sets %s for %s, but the template does not declare it, so sam local would ignore it", samEnvFile, k, r.ID)
				}
			}
		}
	}
}

// There are no workers yet; this keeps their checks honest until there are.
func TestWorkerChecks(t *testing.T) {
	q := resources.FanoutQueue
	tmpl := func(timeout int, event string) []byte {
		return []byte(fmt.Sprintf(`
Transform: AWS::Serverless-2016-10-31
Resources:
  Worker:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: .
      Timeout: %d
      Events:
%s
  Q:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub "${AWS::StackName}-%s"
`, timeout, event, q.Name))
	}
	good := `        Messages:
          Type: SQS
          Properties:
            Queue: !GetAtt Q.Arn
            BatchSize: 10
            FunctionResponseTypes: [ReportBatchItemFailures]`
	bad := `        Messages:
          Type: SQS
          Properties:
            Queue: !GetAtt Q.Arn
            BatchSize: 50`
	secs := int(q.VisibilityTimeout / time.Second)
	for _, c := range []struct {
		name    string
		raw     []byte
		wantBad []string
	}{
		{"good", tmpl(secs, good), nil},
		{"bad", tmpl(secs+1, bad), []string{"FunctionResponseTypes", "BatchSize", "visibility timeout"}},
	} {
		f, err := newFixture(c.raw)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		timeout, _ := strconv.Atoi(str(f.tmpl.Resources["Worker"].Properties["Timeout"]))
		probs := strings.Join(workerProblems(f, f.tmpl.Resources["Worker"], q, timeout), "\n")
		if c.wantBad == nil && probs != "" {
			t.Errorf("%s: unexpected problems:\n%s", c.name, probs)
		}
		for _, w := range c.wantBad {
			if !strings.Contains(probs, w) {
				t.Errorf("%s: no problem mentioning %q in:\n%s", c.name, w, probs)
			}
		}
	}
}

// There are no workers yet either; this runs the worker checks on what the
// generator writes for one, so the design is ready when the first arrives.
func TestGeneratedWorkerPassesChecks(t *testing.T) {
	in, err := samtemplate.FromRepo(".")
	if err != nil {
		t.Fatal(err)
	}
	q := resources.FanoutQueue
	const name = "FanoutWorker"
	in.Settings = map[string]samtemplate.Function{}
	for k, v := range samtemplate.Functions {
		in.Settings[k] = v
	}
	in.Settings[name] = samtemplate.Function{Queue: &q}
	in.Dirs = append(in.Dirs, deploycheck.Kebab(name))
	res, err := samtemplate.Generate(in)
	if err != nil {
		t.Fatal(err)
	}
	f, err := newFixture(res.YAML)
	if err != nil {
		t.Fatal(err)
	}
	r := f.tmpl.Resources[name]
	if r == nil {
		t.Fatalf("the generator wrote no %s", name)
	}
	for _, p := range append(f.tmpl.Lint(), f.tmpl.CheckRefs()...) {
		t.Errorf("%s", p)
	}
	timeout, _ := strconv.Atoi(str(f.tmpl.MergeGlobals(r)["Timeout"]))
	for _, p := range workerProblems(f, r, q, timeout) {
		t.Error(p)
	}
}
