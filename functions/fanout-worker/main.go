// Command fanout-worker is the Lambda that does what every persisted event
// requires beyond its own transaction: push rule evaluation, notifications
// and unread counts, push gateway delivery, and the other handlers
// registered on core/fanout. It is triggered by the FanoutQueue (SQS FIFO,
// one message group, so one instance drains the event stream at a time)
// and reports partial batch failures: a batch that stopped at a failing
// event comes back when the event's retry is due.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/cirrus-matrix/cirrus/infra/app"
	"github.com/cirrus-matrix/cirrus/infra/config"
)

func main() {
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cirrus:", err)
		os.Exit(1)
	}
	a, err := app.Build(context.Background(), cfg, app.NewLogger(cfg.LogLevel, true))
	if err != nil {
		fmt.Fprintln(os.Stderr, "cirrus:", err)
		os.Exit(1)
	}
	lambda.Start(a.HandleFanoutSQS)
}
