// Command federation-sender is the Lambda that delivers our events to other
// servers: it is triggered by the FederationQueue (SQS FIFO, one message
// group per destination) and reports partial batch failures, so a
// destination that is down keeps its messages (with backoff) while the
// others proceed.
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
	lambda.Start(a.HandleFederationSQS)
}
