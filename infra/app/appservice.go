package app

import (
	"context"
	"strconv"

	"github.com/aws/aws-lambda-go/events"

	"github.com/cirrus-matrix/cirrus/core/queue"
)

// RunAppServiceSender delivers events to application services from the
// AppServiceQueue until ctx ends (the all-in-one's in-process worker).
func (a *App) RunAppServiceSender(ctx context.Context) {
	if as := a.Server.AppServices(); as != nil && len(as.Registry.All()) > 0 {
		as.Run(ctx)
	}
}

// HandleAppServiceSQS is the AppserviceSender Lambda's handler: an SQS
// batch from the AppServiceQueue, handled per application service;
// messages not completed are reported as batch item failures (they stay on
// the queue, hidden for their backoff, and later messages of their group
// wait).
func (a *App) HandleAppServiceSQS(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
	var resp events.SQSEventResponse
	msgs := make([]queue.Received, 0, len(ev.Records))
	for _, r := range ev.Records {
		n, _ := strconv.Atoi(r.Attributes["ApproximateReceiveCount"])
		msgs = append(msgs, queue.Received{ID: r.MessageId, Body: []byte(r.Body), Group: r.Attributes["MessageGroupId"],
			Receipt: r.ReceiptHandle, ReceiveCount: n})
	}
	for _, id := range a.Server.AppServices().Handle(ctx, msgs) {
		resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: id})
	}
	return resp, nil
}
