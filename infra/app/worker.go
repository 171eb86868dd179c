package app

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"

	"github.com/cirrus-matrix/cirrus/infra/config"
)

// SQSHandler is a queue worker's batch handler, as a method of App
// (e.g. (*App).HandleFanoutSQS).
type SQSHandler func(a *App, ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error)

// WorkerMain is a queue worker Lambda's whole main: build the app once per
// cold start, then hand every SQS batch to h.
func WorkerMain(h SQSHandler) {
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cirrus:", err)
		os.Exit(1)
	}
	a, err := Build(context.Background(), cfg, NewLogger(cfg.LogLevel, true))
	if err != nil {
		fmt.Fprintln(os.Stderr, "cirrus:", err)
		os.Exit(1)
	}
	lambda.Start(func(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) { return h(a, ctx, ev) })
}
