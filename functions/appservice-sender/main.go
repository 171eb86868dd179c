// Command appservice-sender is the Lambda that pushes events to
// application services (bridges, bots): it is triggered by the
// AppServiceQueue (SQS FIFO, one message group per service) and reports
// partial batch failures, so a service that is down keeps its messages
// (with backoff) while the others proceed.
package main

import "github.com/cirrus-matrix/cirrus/infra/app"

func main() { app.WorkerMain((*app.App).HandleAppServiceSQS) }
