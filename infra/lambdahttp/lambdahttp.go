// Package lambdahttp runs part of the route table as an AWS Lambda function
// behind API Gateway (HTTP API, payload format 2.0), through algnhsa.
package lambdahttp

import (
	"context"
	"fmt"
	"net/http"
	"os"

	"github.com/akrylysov/algnhsa"

	"github.com/cirrus-matrix/cirrus/infra/app"
	"github.com/cirrus-matrix/cirrus/infra/config"
)

// Options are the algnhsa options every function uses.
var Options = &algnhsa.Options{RequestType: algnhsa.RequestTypeAPIGatewayV2}

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
	algnhsa.ListenAndServe(h, Options)
}
