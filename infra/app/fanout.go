package app

import (
	"context"
	"strconv"

	"github.com/aws/aws-lambda-go/events"

	"github.com/cirrus-matrix/cirrus/core/queue"
)

// RunFanout runs the fan-out worker in-process on the FanoutQueue until
// ctx ends (the all-in-one's worker).
func (a *App) RunFanout(ctx context.Context) {
	a.Server.Fanout().Run(ctx)
}

// HandleFanoutSQS is the FanoutWorker Lambda's handler: one drain of the
// event stream per SQS batch; when it stops at a failing event every
// message of the batch is reported as a batch item failure (hidden until
// the event's retry is due), otherwise Lambda deletes them.
//
// An invocation without records is the scheduled sweep (an EventBridge
// event decodes to an empty batch): it queues a wake-up, so the queue's
// one consumer drains in order, rather than draining beside it.
func (a *App) HandleFanoutSQS(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
	var resp events.SQSEventResponse
	if len(ev.Records) == 0 {
		return resp, a.Server.Fanout().WakeSweep(ctx)
	}
	msgs := make([]queue.Received, 0, len(ev.Records))
	for _, r := range ev.Records {
		n, _ := strconv.Atoi(r.Attributes["ApproximateReceiveCount"])
		msgs = append(msgs, queue.Received{ID: r.MessageId, Body: []byte(r.Body), Group: r.Attributes["MessageGroupId"],
			Receipt: r.ReceiptHandle, ReceiveCount: n})
	}
	for _, id := range a.Server.Fanout().Handle(ctx, msgs) {
		resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: id})
	}
	return resp, nil
}
