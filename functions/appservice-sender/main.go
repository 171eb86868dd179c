// Command appservice-sender is the Lambda that pushes events to
// application services (bridges, bots): it is triggered by the
// AppServiceQueue (SQS FIFO, one message group per service) and reports
// partial batch failures, so a service that is down keeps its messages
// (with backoff) while the others proceed.
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
	lambda.Start(a.HandleAppServiceSQS)
}
