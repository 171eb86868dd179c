package deploycheck

import (
	"fmt"
	"sort"
	"strings"
)

// DefinedRoute is a route written in an HTTP API's DefinitionBody (OpenAPI)
// rather than made by a function's event.
type DefinedRoute struct {
	Method string // upper case
	Path   string
	// Integration is the route's x-amazon-apigateway-integration as
	// written (intrinsics in long form, not evaluated).
	Integration any
}

// openAPIMethods are the operation keys of an OpenAPI path item.
var openAPIMethods = map[string]bool{"get": true, "put": true, "post": true, "delete": true, "options": true,
	"head": true, "patch": true, "trace": true, "x-amazon-apigateway-any-method": true}

// DefinitionRoutes lists the routes of an HttpApi's DefinitionBody, sorted
// by path and method. Path items that are intrinsics are not listed.
func (t *Template) DefinitionRoutes(apiID string) []DefinedRoute {
	r, ok := t.Resources[apiID]
	if !ok {
		return nil
	}
	var out []DefinedRoute
	for path, item := range asMap(Path(r.Properties, "DefinitionBody", "paths")) {
		for method, op := range asMap(item) {
			if !openAPIMethods[strings.ToLower(method)] {
				continue
			}
			m := strings.ToUpper(method)
			if m == "X-AMAZON-APIGATEWAY-ANY-METHOD" {
				m = "ANY"
			}
			out = append(out, DefinedRoute{Method: m, Path: path, Integration: asMap(op)["x-amazon-apigateway-integration"]})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Path+" "+out[i].Method < out[j].Path+" "+out[j].Method
	})
	return out
}

// Integration is an evaluated x-amazon-apigateway-integration.
type Integration struct {
	Type                 string // aws_proxy, http_proxy, …
	Method               string // httpMethod
	URI                  string
	PayloadFormatVersion string
	// Function is the logical id of the function an aws_proxy integration
	// invokes, read from its URI (…/functions/<arn>/invocations) when the
	// ARN is a Placeholder; "" otherwise.
	Function string
}

// ResolveIntegration evaluates an integration (a DefinedRoute's) for one
// set of parameter values (env.Params, from ParamValues), conditions
// included. With env.Resource nil, resource references are Placeholders, so
// Function can be recognised.
func (t *Template) ResolveIntegration(v any, env *Env) (Integration, error) {
	ev, err := t.Eval(v, env)
	if err != nil {
		return Integration{}, err
	}
	m, ok := ev.(map[string]any)
	if !ok {
		return Integration{}, fmt.Errorf("integration is %T, not a mapping", ev)
	}
	field := func(k string) string {
		if v, ok := m[k]; ok && v != nil {
			return scalarString(v)
		}
		return ""
	}
	in := Integration{
		Type:                 strings.ToLower(field("type")),
		Method:               strings.ToUpper(field("httpMethod")),
		URI:                  field("uri"),
		PayloadFormatVersion: field("payloadFormatVersion"),
	}
	if in.Type == "" || in.URI == "" {
		return in, fmt.Errorf("integration without type or uri: %v", m)
	}
	if in.Type == "aws_proxy" {
		const marker = "/functions/getatt:"
		if i := strings.Index(in.URI, marker); i >= 0 && strings.HasSuffix(in.URI, ".Arn/invocations") {
			in.Function = strings.TrimSuffix(in.URI[i+len(marker):], ".Arn/invocations")
		}
	}
	return in, nil
}
