package lambdahttp

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
)

// Gateway stands in for API Gateway (HTTP API, payload 2.0) in tests and
// benchmarks: it picks the function that serves a request from the route
// table, the way the deployed HttpApi routes do, turns the request into the
// Lambda event, invokes that function's handler, and turns the Lambda
// response back into an HTTP response. It is an http.RoundTripper, so a
// Matrix client can drive the functions exactly as on AWS.
type Gateway struct {
	mux       *http.ServeMux
	handlers  map[string]lambda.Handler
	defaultFn string
}

// NewGateway routes each route to handlers[route.Function]; requests that
// match no route go to defaultFn (which answers 404 M_UNRECOGNIZED).
func NewGateway(routes []httpapi.Route, handlers map[string]lambda.Handler, defaultFn string) *Gateway {
	g := &Gateway{mux: http.NewServeMux(), handlers: handlers, defaultFn: defaultFn}
	seen := map[string]bool{}
	for _, r := range routes {
		pat := r.Method + " " + r.Path
		if seen[pat] {
			continue
		}
		seen[pat] = true
		fn := r.Function
		// API Gateway's greedy {name+} matches only a non-empty rest.
		greedy := ""
		if i := strings.LastIndex(r.Path, "/{"); i >= 0 && strings.HasSuffix(r.Path, "...}") {
			greedy = strings.TrimSuffix(r.Path[i+2:], "...}")
		}
		g.mux.Handle(pat, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if greedy == "" || req.PathValue(greedy) != "" {
				w.Header().Set("X-Function", fn)
			}
		}))
	}
	return g
}

// RoundTrip implements http.RoundTripper.
func (g *Gateway) RoundTrip(req *http.Request) (*http.Response, error) {
	fn := g.defaultFn
	// API Gateway ignores a trailing slash when it matches routes
	// ("/a/b/" takes the route "/a/b"); the function still sees the path
	// as sent.
	match := req
	if p := req.URL.Path; len(p) > 1 && strings.HasSuffix(p, "/") {
		match = req.Clone(req.Context())
		match.URL.Path = strings.TrimSuffix(p, "/")
		match.URL.RawPath = ""
	}
	if _, pat := g.mux.Handler(match); pat != "" {
		rec := &headerOnly{h: http.Header{}}
		g.mux.ServeHTTP(rec, match)
		if f := rec.h.Get("X-Function"); f != "" {
			fn = f
		}
	}
	h, ok := g.handlers[fn]
	if !ok {
		return nil, fmt.Errorf("gateway: no handler for function %s", fn)
	}
	var body []byte
	if req.Body != nil {
		var err error
		if body, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
		req.Body.Close()
	}
	ev := events.APIGatewayV2HTTPRequest{
		Version:        "2.0",
		RouteKey:       "$default",
		RawPath:        req.URL.EscapedPath(),
		RawQueryString: req.URL.RawQuery,
		Headers:        map[string]string{},
		RequestContext: events.APIGatewayV2HTTPRequestContext{
			RequestID:  fmt.Sprint(time.Now().UnixNano()),
			TimeEpoch:  time.Now().UnixMilli(),
			DomainName: req.URL.Host,
			HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{
				Method: req.Method, Path: req.URL.Path, Protocol: "HTTP/1.1", SourceIP: "127.0.0.1", UserAgent: req.UserAgent(),
			},
		},
	}
	for k, v := range req.Header {
		ev.Headers[strings.ToLower(k)] = strings.Join(v, ",")
	}
	if len(body) > 0 {
		ev.Body = base64.StdEncoding.EncodeToString(body)
		ev.IsBase64Encoded = true
	}
	payload, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	// API Gateway gives an integration at most 30 s.
	ctx, cancel := context.WithTimeout(req.Context(), 30*time.Second)
	defer cancel()
	out, err := h.Invoke(ctx, payload)
	if err != nil {
		return nil, fmt.Errorf("gateway: function %s failed: %w", fn, err)
	}
	var resp events.APIGatewayV2HTTPResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		return nil, fmt.Errorf("gateway: function %s returned %q: %w", fn, out, err)
	}
	rb := []byte(resp.Body)
	if resp.IsBase64Encoded {
		if rb, err = base64.StdEncoding.DecodeString(resp.Body); err != nil {
			return nil, err
		}
	}
	hr := &http.Response{
		StatusCode:    resp.StatusCode,
		Status:        fmt.Sprintf("%d %s", resp.StatusCode, http.StatusText(resp.StatusCode)),
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{},
		Body:          io.NopCloser(bytes.NewReader(rb)),
		ContentLength: int64(len(rb)),
		Request:       req,
	}
	for k, v := range resp.Headers {
		hr.Header.Set(k, v)
	}
	for k, vs := range resp.MultiValueHeaders {
		for _, v := range vs {
			hr.Header.Add(k, v)
		}
	}
	return hr, nil
}

type headerOnly struct{ h http.Header }

func (h *headerOnly) Header() http.Header         { return h.h }
func (h *headerOnly) Write(b []byte) (int, error) { return len(b), nil }
func (h *headerOnly) WriteHeader(int)             {}
