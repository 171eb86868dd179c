package samtemplate

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/cirrus-matrix/cirrus/internal/deploycheck"
)

// Origins: template parameters that move some routes from their Lambda
// functions to an all-in-one Cirrus (functions/homeserver with
// CIRRUS_STORAGE=aws on the same table, bucket and queues, on any small
// container or VM) through API Gateway's HTTP proxy. Everything else stays
// on Lambda.
//
//   - MediaUploadOrigin takes the upload routes. API Gateway hands a Lambda
//     function at most 6 MB (binary bodies base64-encoded), so the upload
//     routes of a Lambda deployment take about 4 MiB; through the proxy
//     they take up to API Gateway's 10 MB payload quota (not adjustable).
//     The function that answers /config is told (CIRRUS_MEDIA_UPLOAD_ORIGIN)
//     and advertises media.ProxiedUploadLimit.
//   - SyncOrigin takes the long-polls (/sync, /events, sliding sync). On
//     Lambda each waiting client holds a function for the whole wait,
//     billed by the second ($4.32 per always-connected client-month at
//     128 MB); one process holds every waiting client for the price of its
//     host (BENCHMARKS.md prices both).
//
// SAM cannot make an event conditional, and routes added beside a SAM
// HttpApi as AWS::ApiGatewayV2::Route resources are dropped whenever SAM
// re-imports the API's definition. So these routes are not events: they
// are written in the API's DefinitionBody (which SAM merges the events
// into) with an Fn::If between the two integrations, and the function gets
// an explicit permission for them.

// RouteKey names a route of the route table: method and ServeMux path.
type RouteKey struct {
	Method, Path string
}

// Origin is a template parameter that can send some routes to an
// all-in-one instead of their function.
type Origin struct {
	// Param is the parameter, Condition the condition "Param is set".
	Param, Condition string
	// Env, if set, is the variable that tells the routes' functions the
	// parameter's value.
	Env string
	// Routes are the routes it moves.
	Routes []RouteKey
	// Description is the parameter's description.
	Description string
}

// The origins of the template.
var (
	UploadOrigin = Origin{
		Param: "MediaUploadOrigin", Condition: "HasMediaUploadOrigin", Env: "CIRRUS_MEDIA_UPLOAD_ORIGIN",
		Routes: []RouteKey{
			{http.MethodPost, "/_matrix/media/v3/upload"},
			{http.MethodPut, "/_matrix/media/v3/upload/{serverName}/{mediaId}"},
		},
		Description: "HTTPS origin (e.g. https://upload.example.org) of an all-in-one Cirrus " +
			"(functions/homeserver, CIRRUS_STORAGE=aws, this stack's table, bucket and queues) that takes the upload " +
			"routes (POST /_matrix/media/v3/upload, PUT /_matrix/media/v3/upload/{serverName}/{mediaId}) instead of the " +
			"Media function, so clients without MSC3870 can upload up to API Gateway's 10 MB rather than Lambda's 4 MiB. " +
			"Empty keeps uploads on Lambda.",
	}
	SyncOrigin = Origin{
		Param: "SyncOrigin", Condition: "HasSyncOrigin",
		Routes: []RouteKey{
			{http.MethodGet, "/_matrix/client/v3/sync"},
			{http.MethodGet, "/_matrix/client/v3/events"},
			{http.MethodPost, "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"},
		},
		Description: "HTTPS origin (e.g. https://sync.example.org) of an all-in-one Cirrus " +
			"(functions/homeserver, CIRRUS_STORAGE=aws, this stack's table, bucket and queues) that holds the long-polls " +
			"(GET /_matrix/client/v3/sync, GET /_matrix/client/v3/events, sliding sync) instead of the ClientSync function: " +
			"one process waits for every connected client for the price of its host, where Lambda bills each waiting " +
			"client by the second. Empty keeps them on Lambda.",
	}
	// Origins are every origin, in template order.
	Origins = []Origin{UploadOrigin, SyncOrigin}
)

// OriginPattern is an origin parameter's AllowedPattern: empty, or scheme
// and host (with an optional port), nothing after them, as infra/config
// accepts it.
const OriginPattern = `|https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?`

// proxyTimeoutMillis is API Gateway's longest integration timeout.
const proxyTimeoutMillis = apiGatewayTimeout * 1000

// proxied is one route of an origin in the template.
type proxied struct {
	origin *Origin
	method string // upper case
	path   string // API Gateway syntax
	fn     string // the function serving it without the origin
	event  string // deploycheck.EventName of method and path
}

// takeProxied reports whether a route of the route table is one of the
// input's origins' routes, and records it.
func (g *generator) takeProxied(method, muxPath, apiPath, fn string) bool {
	for i := range g.in.Origins {
		o := &g.in.Origins[i]
		if slices.Contains(o.Routes, RouteKey{method, muxPath}) {
			g.proxied = append(g.proxied, proxied{origin: o, method: method, path: apiPath, fn: fn, event: deploycheck.EventName(method, apiPath)})
			return true
		}
	}
	return false
}

// checkProxied reports origin routes the route table lacks and sorts the
// others.
func (g *generator) checkProxied() {
	for _, o := range g.in.Origins {
		for _, k := range o.Routes {
			if !slices.ContainsFunc(g.proxied, func(p proxied) bool {
				path, _ := deploycheck.APIGatewayPath(k.Path)
				return p.method == k.Method && p.path == path
			}) {
				g.problem("%s route %s %s (internal/samtemplate.Origins) is not in the route table (core/server)", o.Param, k.Method, k.Path)
			}
		}
	}
	slices.SortFunc(g.proxied, func(a, b proxied) int {
		return strings.Compare(a.path+" "+a.method, b.path+" "+b.method)
	})
}

func (g *generator) hasProxied() bool { return len(g.proxied) > 0 }

// usedOrigins are the origins with at least one route in the route table,
// in input order.
func (g *generator) usedOrigins() []*Origin {
	var out []*Origin
	for i := range g.in.Origins {
		o := &g.in.Origins[i]
		if slices.ContainsFunc(g.proxied, func(p proxied) bool { return p.origin == o }) {
			out = append(out, o)
		}
	}
	return out
}

// parameter is the origin's template parameter.
func (o *Origin) parameter() parameter {
	return parameter{o.Param, mapping{
		{key: "Type", value: "String"},
		{key: "Description", value: folded(o.Description)},
		{key: "AllowedPattern", value: OriginPattern},
		{key: "ConstraintDescription", value: "empty, or scheme://host[:port] with nothing after it"},
		{key: "Default", value: ""},
	}}
}

// definitionBody is the API's OpenAPI definition: the origins' routes,
// each an Fn::If between the HTTP proxy to its origin and the Lambda
// function.
// SAM adds every event's route to it.
func (g *generator) definitionBody() mapping {
	paths := mapping{}
	for i := 0; i < len(g.proxied); {
		path := g.proxied[i].path
		ops := mapping{}
		for ; i < len(g.proxied) && g.proxied[i].path == path; i++ {
			p := g.proxied[i]
			op := mapping{}
			if params := pathParams(path); len(params) > 0 {
				op.add("parameters", params)
			}
			op.add("responses", mapping{})
			op.add("x-amazon-apigateway-integration", tagged{"!If", list{
				p.origin.Condition,
				mapping{
					{key: "type", value: "http_proxy"},
					{key: "httpMethod", value: p.method},
					{key: "uri", value: sub("${" + p.origin.Param + "}" + path)},
					{key: "connectionType", value: "INTERNET"},
					{key: "payloadFormatVersion", value: "1.0"},
					{key: "timeoutInMillis", value: proxyTimeoutMillis},
				},
				mapping{
					{key: "type", value: "aws_proxy"},
					{key: "httpMethod", value: http.MethodPost},
					{key: "uri", value: sub("arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${" + p.fn + ".Arn}/invocations")},
					{key: "payloadFormatVersion", value: "2.0"},
				},
			}})
			ops.add(strings.ToLower(p.method), op)
		}
		paths.add(path, ops)
	}
	return mapping{
		{key: "openapi", value: "3.0.1"},
		{key: "info", value: mapping{
			{key: "title", value: sub("${AWS::StackName}")},
			{key: "version", value: "1.0"},
		}},
		{key: "paths", value: paths},
	}
}

// pathParams declares the {variables} of an API Gateway path.
func pathParams(path string) list {
	l := list{}
	for _, seg := range strings.Split(path, "/") {
		if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
			l = append(l, mapping{
				{key: "name", value: strings.TrimSuffix(strings.Trim(seg, "{}"), "+")},
				{key: "in", value: "path"},
				{key: "required", value: true},
				{key: "schema", value: mapping{{key: "type", value: "string"}}},
			})
		}
	}
	return l
}

// proxiedPermissions let API Gateway invoke the function behind each
// origin route (SAM adds these for events only). They are harmless while
// the routes go to the origin.
func (g *generator) proxiedPermissions(m *mapping) {
	for i, p := range g.proxied {
		arnPath := p.path
		for _, seg := range strings.Split(p.path, "/") {
			if strings.HasPrefix(seg, "{") {
				arnPath = strings.Replace(arnPath, seg, "*", 1)
			}
		}
		f := m.add(p.fn+p.event+"Permission", mapping{
			{key: "Type", value: "AWS::Lambda::Permission"},
			{key: "Properties", value: mapping{
				{key: "Action", value: "lambda:InvokeFunction"},
				{key: "FunctionName", value: ref(p.fn)},
				{key: "Principal", value: "apigateway.amazonaws.com"},
				{key: "SourceArn", value: sub(fmt.Sprintf("arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${%s}/*/%s%s", APIID, p.method, arnPath))},
			}},
		})
		f.gap = true
		if i == 0 {
			f.comment = "API Gateway may invoke the function behind the routes an origin parameter can move, which are " +
				"written in the API's DefinitionBody rather than as events (see " + originParams(g.usedOrigins()) + ")."
		}
	}
}

// originEnvironment are the variables telling a function where its
// routes go (name → value).
func (g *generator) originEnvironment(fn *function) mapping {
	vars := mapping{}
	for _, o := range g.usedOrigins() {
		if o.Env != "" && slices.ContainsFunc(g.proxied, func(p proxied) bool { return p.origin == o && p.fn == fn.name }) {
			vars.add(o.Env, ref(o.Param))
		}
	}
	return vars
}

// originParams names the origins' parameters ("A and B").
func originParams(os []*Origin) string {
	names := make([]string, len(os))
	for i, o := range os {
		names[i] = o.Param
	}
	return strings.Join(names, " and ")
}
