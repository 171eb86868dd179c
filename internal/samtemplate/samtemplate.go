// Package samtemplate generates template.yaml, the AWS SAM template of a
// Cirrus stack, from the code that defines the stack:
//
//   - the route table (core/server): one AWS::Serverless::Function per
//     function named there, with an HttpApi event for each of its routes
//     and the $default route on server.FnDefault;
//   - the resource definitions (core/resources): the table, the media
//     bucket, each queue with its dead-letter queue;
//   - the directories functions/<kebab-case name>/ that hold each
//     function's main package;
//   - Functions (functions.go): memory, timeouts, reserved concurrency and
//     workers, which the route table does not say.
//
// Run `make template` after changing any of them; template_test.go fails
// while the committed template.yaml differs from what Generate writes, and
// checks the template on its own terms (it parses the YAML independently,
// so it also guards this generator).
package samtemplate

import (
	"cmp"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"hash/fnv"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	h "github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/queue"
	"github.com/cirrus-matrix/cirrus/core/server"
	"github.com/cirrus-matrix/cirrus/internal/deploycheck"
)

// Logical ids of the resources that are not functions.
const (
	APIID          = "HttpApi"
	TableID        = "Table"
	BucketID       = "MediaBucket"
	BucketPolicyID = "MediaBucketPolicy"
)

// DefaultEventName is the logical id of the $default route's event.
const DefaultEventName = "Default"

// DeadLetterRetention is how long a dead-letter queue keeps messages: the
// most SQS allows, so there is time to look at them.
const DeadLetterRetention = 14 * 24 * time.Hour

// maxQueueName is SQS's limit on queue names (the stack name is a prefix).
const maxQueueName = 80

// maxDescription is Lambda's limit on a function's description.
const maxDescription = 256

// apiGatewayTimeout is how long API Gateway waits for a function, in seconds.
const apiGatewayTimeout = 30

// Input is everything the template is generated from.
type Input struct {
	// Routes is the route table (server.RouteTable()).
	Routes []h.Route
	// Default is the function that gets API Gateway's $default route.
	Default string
	// Dirs are the names of the directories functions/<name>/ that have a
	// main.go, NotDeployed ones included.
	Dirs []string
	// Comments are the comments of the Fn* constants: function → text.
	Comments map[string]string
	// Settings are the per-function settings (Functions).
	Settings map[string]Function
	// Origins are the parameters that can send some routes to an
	// all-in-one instead of their function (origins.go).
	Origins []Origin
}

// FromRepo reads the Input of the repository whose root is root.
func FromRepo(root string) (Input, error) {
	in := Input{
		Routes:   server.RouteTable(),
		Default:  server.FnDefault,
		Settings: Functions,
		Origins:  Origins,
	}
	mains, err := filepath.Glob(filepath.Join(root, "functions", "*", "main.go"))
	if err != nil {
		return in, err
	}
	for _, m := range mains {
		in.Dirs = append(in.Dirs, filepath.Base(filepath.Dir(m)))
	}
	slices.Sort(in.Dirs)
	in.Comments, err = constantComments(filepath.Join(root, "core", "server"))
	return in, err
}

// constantComments reads the string constants of the Go files in dir that
// carry a comment: value → comment. It is how a function's description
// comes from the line that declares it (FnSend = "ClientSend" // …).
func constantComments(dir string) (map[string]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ParseComments)
		if err != nil {
			return nil, err
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, s := range gd.Specs {
				vs := s.(*ast.ValueSpec)
				text := ""
				if vs.Comment != nil {
					text = vs.Comment.Text()
				} else if vs.Doc != nil {
					text = vs.Doc.Text()
				}
				text = strings.Join(strings.Fields(text), " ")
				if text == "" {
					continue
				}
				for _, v := range vs.Values {
					if lit, ok := v.(*ast.BasicLit); ok && lit.Kind == token.STRING {
						if s, err := strconv.Unquote(lit.Value); err == nil {
							out[s] = text
						}
					}
				}
			}
		}
	}
	return out, nil
}

// Result is a generated template and what is wrong with its input.
type Result struct {
	YAML []byte
	// Problems make the stack wrong or undeployable (a function without a
	// directory, a directory without routes, …). The template is written
	// anyway, with what could be generated; template_test.go fails on them.
	Problems []string
	// Notes are harmless: settings for functions that do not exist yet.
	Notes []string
}

// function is one function of the template.
type function struct {
	name     string
	routes   []route // sorted by path, then method
	worker   *queue.Spec
	settings Function
}

// route is one HttpApi event.
type route struct {
	method, path, event string
}

// Generate builds the template.
func Generate(in Input) (*Result, error) {
	g := &generator{in: in, res: &Result{}}
	out, err := render(header, g.document())
	if err != nil {
		return nil, err
	}
	g.res.YAML = out
	return g.res, nil
}

// document is the whole template as a tree.
func (g *generator) document() mapping {
	fns := g.functions()
	doc := mapping{}
	doc.add("AWSTemplateFormatVersion", "2010-09-09")
	doc.add("Transform", deploycheck.ServerlessTransform)
	doc.add("Description", folded(description()))
	doc.add("Parameters", g.parameters()).gap = true
	doc.add("Rules", rules()).gap = true
	doc.add("Conditions", g.conditions()).gap = true
	gl := doc.add("Globals", globals())
	gl.gap = true
	gl.comment = fmt.Sprintf("Each function sets its own MemorySize and Timeout (internal/samtemplate/functions.go; by default %d MB "+
		"and %d s, below API Gateway's %d s integration timeout, so a slow request ends with the function's own error "+
		"rather than a bare 503 from the gateway).", DefaultMemorySize, DefaultTimeout, apiGatewayTimeout)
	doc.add("Resources", g.resources(fns)).gap = true
	doc.add("Outputs", outputs()).gap = true
	return doc
}

const header = "GENERATED by `make template` (go run ./internal/samtemplate/gentemplate) " +
	"from the route table (core/server), the resources (core/resources), " +
	"the directories under functions/ and the function settings " +
	"(internal/samtemplate/functions.go). Do not edit: change those and regenerate."

type generator struct {
	in      Input
	res     *Result
	proxied []proxied // the origins' routes (origins.go), sorted
}

func (g *generator) problem(format string, args ...any) {
	g.res.Problems = append(g.res.Problems, fmt.Sprintf(format, args...))
}

// functions collects the functions from the route table and the worker
// settings, and checks them against the directories under functions/.
func (g *generator) functions() []*function {
	byName := map[string]*function{}
	seen := map[string]string{} // "METHOD /path" → function
	for _, r := range g.in.Routes {
		method := r.Method
		if method == "" {
			method = "ANY"
		}
		where := fmt.Sprintf("route %s %s (function %q)", method, r.Path, r.Function)
		if r.Function == "" {
			g.problem("%s: names no function", where)
			continue
		}
		path, err := deploycheck.APIGatewayPath(r.Path)
		if err != nil {
			g.problem("%s: %v", where, err)
			continue
		}
		key := method + " " + path
		if prev, dup := seen[key]; dup {
			g.problem("%s: %s is already routed to %s; API Gateway routes each method and path once", where, key, prev)
			continue
		}
		seen[key] = r.Function
		fn := byName[r.Function]
		if fn == nil {
			fn = &function{name: r.Function, settings: g.in.Settings[r.Function]}
			byName[r.Function] = fn
		}
		if g.takeProxied(method, r.Path, path, r.Function) {
			continue // in the API's DefinitionBody, not an event
		}
		fn.routes = append(fn.routes, route{method: method, path: path})
	}
	g.checkProxied()
	for _, name := range sortedKeys(g.in.Settings) {
		s := g.in.Settings[name]
		if s.Queue == nil {
			if byName[name] == nil {
				g.res.Notes = append(g.res.Notes, fmt.Sprintf("internal/samtemplate/functions.go has settings for %s, which serves no route (yet) and is not a worker: they are unused", name))
			}
			continue
		}
		if fn := byName[name]; fn != nil {
			g.problem("%s is a worker (Queue %s in internal/samtemplate/functions.go) but serves %d routes in the route table (core/server): a function is one or the other", name, s.Queue.Name, len(fn.routes))
			continue
		}
		byName[name] = &function{name: name, worker: s.Queue, settings: s}
	}

	if g.in.Default != "" {
		if fn := byName[g.in.Default]; fn == nil || fn.worker != nil {
			g.problem("server.FnDefault is %s, which serves no route: API Gateway's $default route needs a function of the route table", g.in.Default)
		}
	}

	dirs := map[string]bool{}
	for _, d := range g.in.Dirs {
		dirs[d] = true
		if NotDeployed[d] {
			continue
		}
		if name := camel(d); byName[name] == nil {
			g.problem("functions/%s/main.go exists, but no route in the route table (core/server) names function %s and internal/samtemplate/functions.go declares no worker %s: "+
				"give it routes (Function: server.Fn… = %q), declare it a worker (a Functions entry with Queue), or list %q in NotDeployed",
				d, name, name, name, d)
		}
	}

	reserved := map[string]bool{APIID: true, TableID: true, BucketID: true, BucketPolicyID: true}
	for _, q := range queues {
		reserved[queueID(q)], reserved[deadLetterID(q)] = true, true
	}
	var out []*function
	for _, name := range sortedKeys(byName) {
		fn := byName[name]
		dir := deploycheck.Kebab(name)
		switch {
		case reserved[name]:
			g.problem("function %s has the logical id of another resource of the template: rename it", name)
			continue
		case camel(dir) != name:
			g.problem("function %s: build.mk derives logical ids from directory names (%s → %s); choose a name that round-trips (e.g. FederationApi, not FederationAPI)", name, dir, camel(dir))
		case !dirs[dir]:
			if fn.worker != nil {
				g.problem("worker %s has no functions/%s/main.go: create it (the worker's main package)", name, dir)
			} else {
				g.problem("function %s has %d routes in the route table (core/server; e.g. %s %s) but no functions/%s/main.go: create it with func main() { lambdahttp.Main(server.Fn…) } naming %q",
					name, len(fn.routes), fn.routes[0].method, fn.routes[0].path, dir, name)
			}
		}
		g.check(fn)
		g.nameEvents(fn)
		out = append(out, fn)
	}
	return out
}

// check validates a function's settings.
func (g *generator) check(fn *function) {
	s := fn.settings
	if s.MemorySize != 0 && (s.MemorySize < 128 || s.MemorySize > 10240) {
		g.problem("%s: MemorySize %d is outside Lambda's 128–10240 MB", fn.name, s.MemorySize)
	}
	if s.ReservedConcurrency < 0 {
		g.problem("%s: ReservedConcurrency %d is negative", fn.name, s.ReservedConcurrency)
	}
	for v, p := range s.Environment {
		if !slices.ContainsFunc(parameterList, func(pr parameter) bool { return pr.name == p }) {
			g.problem("%s: Environment %s names %q, which is not a template parameter", fn.name, v, p)
		}
	}
	if d := fn.description(g.in.Comments); len(d) > maxDescription {
		g.problem("%s: description is %d characters; Lambda allows %d", fn.name, len(d), maxDescription)
	}
	timeout := fn.timeout()
	if fn.worker == nil {
		if timeout >= apiGatewayTimeout {
			g.problem("%s: Timeout %d s; API Gateway gives up after %d s, so keep it below that", fn.name, timeout, apiGatewayTimeout)
		}
		return
	}
	q := fn.worker
	if !slices.ContainsFunc(queues, func(r queue.Spec) bool { return r.Name == q.Name }) {
		g.problem("worker %s consumes %s, which is not one of core/resources.Queues", fn.name, q.Name)
	}
	if time.Duration(timeout)*time.Second > q.VisibilityTimeout {
		g.problem("worker %s: Timeout %d s is longer than %s's visibility timeout (%s): Lambda refuses such a mapping", fn.name, timeout, q.Name, q.VisibilityTimeout)
	}
	if b := fn.batchSize(); b < 1 || (q.FIFO && b > queue.MaxBatch) {
		g.problem("worker %s: BatchSize %d; FIFO queues take 1 to %d", fn.name, b, queue.MaxBatch)
	}
}

// nameEvents sorts a function's routes and gives each event a logical id
// derived from its method and path (GET /_matrix/client/v3/login →
// GetClientV3Login). Two routes that would get the same id (they differ
// only in punctuation) both get a suffix hashed from method and path, so
// names never depend on the order of the route table.
func (g *generator) nameEvents(fn *function) {
	slices.SortFunc(fn.routes, func(a, b route) int {
		return cmp.Or(cmp.Compare(a.path, b.path), cmp.Compare(methodRank(a.method), methodRank(b.method)), cmp.Compare(a.method, b.method))
	})
	count := map[string]int{DefaultEventName: 1}
	for _, r := range fn.routes {
		count[deploycheck.EventName(r.method, r.path)]++
	}
	for i := range fn.routes {
		r := &fn.routes[i]
		r.event = deploycheck.EventName(r.method, r.path)
		if count[r.event] > 1 {
			hs := fnv.New32a()
			hs.Write([]byte(r.method + " " + r.path))
			r.event += fmt.Sprintf("X%08x", hs.Sum32())
		}
		if len(r.event) > deploycheck.MaxLogicalID-len(fn.name)-len("Permission") {
			g.problem("%s: event %s is too long for a logical id", fn.name, r.event)
		}
	}
}

// methodRank orders the methods of one path the way the Matrix spec lists
// them.
func methodRank(m string) int {
	switch m {
	case http.MethodGet:
		return 0
	case http.MethodHead:
		return 1
	case http.MethodPost:
		return 2
	case http.MethodPut:
		return 3
	case http.MethodPatch:
		return 4
	case http.MethodDelete:
		return 5
	}
	return 6
}

func (fn *function) description(comments map[string]string) string {
	if fn.settings.Description != "" {
		return fn.settings.Description
	}
	return comments[fn.name]
}

func (fn *function) memorySize() int {
	return cmp.Or(fn.settings.MemorySize, DefaultMemorySize)
}

func (fn *function) timeout() int {
	if fn.settings.Timeout != 0 {
		return fn.settings.Timeout
	}
	if fn.worker != nil {
		return max(1, int(fn.worker.VisibilityTimeout/time.Second)/2)
	}
	return DefaultTimeout
}

func (fn *function) batchSize() int {
	return cmp.Or(fn.settings.BatchSize, queue.MaxBatch)
}

// camel is build.mk's directory → logical id rule (client-discovery →
// ClientDiscovery).
func camel(dir string) string { return deploycheck.Camel(dir) }

// idWords turns a resource name into a CamelCase logical id part:
// cirrus-federation.fifo → Federation.
func idWords(name string) string {
	name = strings.TrimSuffix(strings.TrimPrefix(name, "cirrus-"), ".fifo")
	var b strings.Builder
	for _, w := range strings.FieldsFunc(name, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) }) {
		rs := []rune(w)
		rs[0] = unicode.ToUpper(rs[0])
		b.WriteString(string(rs))
	}
	return b.String()
}

func queueID(q queue.Spec) string      { return idWords(q.Name) + "Queue" }
func deadLetterID(q queue.Spec) string { return idWords(q.Name) + "DeadLetterQueue" }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// WriteFile writes data to path unless it already holds exactly that.
func WriteFile(path string, data []byte) error {
	if old, err := os.ReadFile(path); err == nil && string(old) == string(data) {
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
