// Package testenv starts a whole Cirrus for end-to-end tests and benchmarks,
// on each storage engine and through each entry point:
//
//	embedded  the all-in-one over HTTP on the embedded store
//	aws       the all-in-one over HTTP on DynamoDB, SQS and S3 (the local stand-ins)
//	lambda    every Lambda function built on its own (as separate instances
//	          would be) over the stand-ins, reached through an API Gateway
//	          emulator that speaks payload 2.0 events to algnhsa
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/akrylysov/algnhsa"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/cirrus-matrix/cirrus/core/server"
	"github.com/cirrus-matrix/cirrus/infra/app"
	"github.com/cirrus-matrix/cirrus/infra/awstest"
	"github.com/cirrus-matrix/cirrus/infra/config"
	"github.com/cirrus-matrix/cirrus/infra/lambdahttp"
)

// Engines are the ways a test can run the server.
var Engines = []string{"embedded", "aws", "lambda"}

// Env is a running server.
type Env struct {
	// URL is the client API base URL.
	URL string
	// HTTP is the client to reach it with (its transport is the API Gateway
	// emulator for the lambda engine).
	HTTP *http.Client
	// Apps are the built processes (one, or one per Lambda function).
	Apps []*app.App
	// Env are the settings the server was started with.
	Vars map[string]string
}

// Start runs a server on engine with the given extra settings (CIRRUS_*),
// stopped when the test ends. Registration is open, bcrypt cost minimal and
// rate limits off unless vars say otherwise.
func Start(t testing.TB, engine string, vars map[string]string) *Env {
	t.Helper()
	env := map[string]string{
		"CIRRUS_SERVER_NAME":  "cirrus.test",
		"CIRRUS_REGISTRATION": "open",
		"CIRRUS_BCRYPT_COST":  "4",
		"CIRRUS_RATE_LIMITS":  "false",
		"CIRRUS_LOG_LEVEL":    "error",
		"CIRRUS_DATA_DIR":     t.TempDir(),
	}
	if engine != "embedded" {
		awstest.Require(t, "DYNAMODB")
		awstest.Require(t, "SQS")
		s3 := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
		t.Cleanup(s3.Close)
		t.Setenv("AWS_ENDPOINT_URL_S3", s3.URL)
		for k, v := range map[string]string{"AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"} {
			if os.Getenv(k) == "" {
				t.Setenv(k, v)
			}
		}
		suffix := randomSuffix()
		env["CIRRUS_STORAGE"] = "aws"
		env["CIRRUS_AWS_CREATE_RESOURCES"] = "true"
		env["CIRRUS_TABLE"] = "cirrus-test-" + suffix
		env["CIRRUS_MEDIA_BUCKET"] = "cirrus-media-" + suffix
	}
	for k, v := range vars {
		env[k] = v
	}
	get := func(k string) string { return env[k] }
	cfg, err := config.Load(get)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("CIRRUS_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	ctx := context.Background()
	e := &Env{Vars: env}
	build := func() *app.App {
		a, err := app.Build(ctx, cfg, log)
		if err != nil {
			t.Fatalf("build %s: %v", engine, err)
		}
		t.Cleanup(func() { a.Close() })
		e.Apps = append(e.Apps, a)
		return a
	}
	switch engine {
	case "embedded", "aws":
		a := build()
		srv := httptest.NewServer(a.Server.Handler())
		t.Cleanup(srv.Close)
		e.URL, e.HTTP = srv.URL, srv.Client()
	case "lambda":
		handlers := map[string]lambda.Handler{}
		for _, fn := range server.Functions() {
			handlers[fn] = algnhsa.New(build().Server.Handler(fn), lambdahttp.OptionsFor(fn))
		}
		gw := lambdahttp.NewGateway(server.RouteTable(), handlers, server.FnDefault)
		e.URL, e.HTTP = "http://apigateway.test", &http.Client{Transport: gw}
	default:
		t.Fatalf("unknown engine %q", engine)
	}
	return e
}

func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return strings.ToLower(hex.EncodeToString(b[:]))
}
