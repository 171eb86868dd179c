// Package lambdahttp runs part of the route table as an AWS Lambda function
// behind API Gateway (HTTP API, payload format 2.0), through algnhsa.
package lambdahttp

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"

	"github.com/akrylysov/algnhsa"
	"github.com/aws/aws-lambda-go/lambda"

	"github.com/cirrus-matrix/cirrus/core/server"
	"github.com/cirrus-matrix/cirrus/infra/app"
	"github.com/cirrus-matrix/cirrus/infra/config"
)

// Options are the algnhsa options of functions that answer JSON.
var Options = &algnhsa.Options{RequestType: algnhsa.RequestTypeAPIGatewayV2}

// BinaryOptions are the options of functions that send media: every
// answer's body is base64-encoded in the Lambda response (API Gateway
// decodes it), so bytes that are not UTF-8 arrive intact. Without it
// algnhsa puts the body in a JSON string and binary content is mangled.
var BinaryOptions = &algnhsa.Options{RequestType: algnhsa.RequestTypeAPIGatewayV2, BinaryContentTypes: []string{"*/*"}}

// OptionsFor returns the options for a Lambda serving the named functions'
// routes (every route when none is named).
func OptionsFor(functions ...string) *algnhsa.Options {
	if len(functions) == 0 || slices.Contains(functions, server.FnMedia) {
		return BinaryOptions
	}
	return Options
}

// Handler builds the app from the environment and returns the handler for
// the named functions' routes (every route if none).
func Handler(ctx context.Context, functions ...string) (http.Handler, *app.App, error) {
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		return nil, nil, err
	}
	log := app.NewLogger(cfg.LogLevel, true)
	a, err := app.Build(ctx, cfg, log)
	if err != nil {
		return nil, nil, err
	}
	return a.Server.Handler(functions...), a, nil
}

// Main is a function's whole main: build once per cold start, then serve
// API Gateway events until the runtime stops the process.
func Main(functions ...string) {
	h, _, err := Handler(context.Background(), functions...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cirrus:", err)
		os.Exit(1)
	}
	lambda.StartHandler(Adapt(h, functions...))
}

// Adapt turns a function's handler into a Lambda handler for API Gateway
// events. algnhsa hands the handler an unescaped path only, so an id with
// an escaped slash (%2F: device ids made of base64 keys, some event ids)
// would split into two path segments; the event's raw path is put back in
// URL.RawPath, which the router matches on.
func Adapt(h http.Handler, functions ...string) lambda.Handler {
	return algnhsa.New(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ev, ok := algnhsa.APIGatewayV2RequestFromContext(r.Context()); ok && ev.RawPath != "" {
			if p, err := url.PathUnescape(ev.RawPath); err == nil && p == r.URL.Path {
				r.URL.RawPath = ev.RawPath
			}
		}
		h.ServeHTTP(w, r)
	}), OptionsFor(functions...))
}
