// Command fanout-worker is the Lambda that does what every persisted event
// requires beyond its own transaction: push rule evaluation, notifications
// and unread counts, push gateway delivery, and the other handlers
// registered on core/fanout. It is triggered by the FanoutQueue (SQS FIFO,
// one message group, so one instance drains the event stream at a time)
// and reports partial batch failures: a batch that stopped at a failing
// event comes back when the event's retry is due.
package main

import "github.com/cirrus-matrix/cirrus/infra/app"

func main() { app.WorkerMain((*app.App).HandleFanoutSQS) }
