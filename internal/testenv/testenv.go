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
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"

	"github.com/cirrus-matrix/cirrus/core/queue"
	"github.com/cirrus-matrix/cirrus/core/resources"
	"github.com/cirrus-matrix/cirrus/core/server"
	"github.com/cirrus-matrix/cirrus/infra/app"
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
		// Its own table, bucket and queues: tests sharing a queue would take
		// each other's wake-ups (awsServerVars, federation.go).
		for k, v := range awsServerVars(t)() {
			env[k] = v
		}
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
		runWorker(t, a.RunFanout)
		srv := httptest.NewServer(a.Server.Handler())
		t.Cleanup(srv.Close)
		e.URL, e.HTTP = srv.URL, srv.Client()
	case "lambda":
		handlers := map[string]lambda.Handler{}
		for _, fn := range server.Functions() {
			handlers[fn] = lambdahttp.Adapt(build().Server.Handler(fn), fn)
		}
		// The FanoutWorker function, fed by an SQS event source stand-in.
		w := build()
		runWorker(t, func(ctx context.Context) {
			SQSEventSource(ctx, w.Queues[resources.FanoutQueue.Name], w.HandleFanoutSQS)
		})
		gw := lambdahttp.NewGateway(server.RouteTable(), handlers, server.FnDefault)
		e.URL, e.HTTP = "http://apigateway.test", &http.Client{Transport: gw}
	default:
		t.Fatalf("unknown engine %q", engine)
	}
	return e
}

// runWorker runs fn until the test ends (stopped before the apps close).
func runWorker(t testing.TB, fn func(ctx context.Context)) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// SQSEventSource plays Lambda's SQS event source mapping: it receives
// batches from q, hands them to handler as an SQS event and deletes the
// messages not reported as batch item failures, until ctx ends.
func SQSEventSource(ctx context.Context, q queue.Queue, handler func(context.Context, events.SQSEvent) (events.SQSEventResponse, error)) {
	for ctx.Err() == nil {
		msgs, err := q.Receive(ctx, queue.MaxBatch, time.Second)
		if err != nil || len(msgs) == 0 {
			if err != nil {
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
			continue
		}
		var ev events.SQSEvent
		for _, m := range msgs {
			ev.Records = append(ev.Records, events.SQSMessage{MessageId: m.ID, ReceiptHandle: m.Receipt, Body: string(m.Body),
				Attributes: map[string]string{"ApproximateReceiveCount": strconv.Itoa(m.ReceiveCount), "MessageGroupId": m.Group}})
		}
		hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		resp, err := handler(hctx, ev)
		cancel()
		failed := map[string]bool{}
		for _, f := range resp.BatchItemFailures {
			failed[f.ItemIdentifier] = true
		}
		for _, m := range msgs {
			if err == nil && !failed[m.ID] {
				_ = q.Delete(context.WithoutCancel(ctx), m.Receipt)
			}
		}
	}
}

func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return strings.ToLower(hex.EncodeToString(b[:]))
}
