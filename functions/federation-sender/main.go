// Command federation-sender is the Lambda that delivers our events to other
// servers: it is triggered by the FederationQueue (SQS FIFO, one message
// group per destination) and reports partial batch failures, so a
// destination that is down keeps its messages (with backoff) while the
// others proceed.
package main

import "github.com/cirrus-matrix/cirrus/infra/app"

func main() { app.WorkerMain((*app.App).HandleFederationSQS) }
