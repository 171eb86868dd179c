package sqs

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/cirrus-matrix/cirrus/core/queue"
)

// deadLetterRetention is how long the dead-letter queue keeps messages: the
// SQS maximum, so a dead letter outlives its original's retention.
const deadLetterRetention = 14 * 24 * time.Hour

// EnsureQueue creates the queue described by spec and its dead-letter queue
// (or returns them if they exist with the same attributes), with the redrive
// policy moving a message after spec.MaxReceives receives. It is for local
// stand-ins and tests; deployed queues come from template.yaml.
func EnsureQueue(ctx context.Context, client *awssqs.Client, spec queue.Spec) (url, dlqURL string, err error) {
	dlqName := spec.DeadLetterName()
	created, err := client.CreateQueue(ctx, &awssqs.CreateQueueInput{
		QueueName:  &dlqName,
		Attributes: queueAttributes(spec.FIFO, spec.VisibilityTimeout, deadLetterRetention),
	})
	if err != nil {
		return "", "", fmt.Errorf("sqs: create %s: %w", dlqName, err)
	}
	dlqURL = *created.QueueUrl
	got, err := client.GetQueueAttributes(ctx, &awssqs.GetQueueAttributesInput{
		QueueUrl:       &dlqURL,
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn},
	})
	if err != nil {
		return "", "", fmt.Errorf("sqs: ARN of %s: %w", dlqName, err)
	}
	attrs := queueAttributes(spec.FIFO, spec.VisibilityTimeout, spec.Retention)
	if spec.MaxReceives > 0 {
		policy, err := json.Marshal(map[string]any{
			"deadLetterTargetArn": got.Attributes[string(types.QueueAttributeNameQueueArn)],
			"maxReceiveCount":     spec.MaxReceives,
		})
		if err != nil {
			return "", "", err
		}
		attrs[string(types.QueueAttributeNameRedrivePolicy)] = string(policy)
	}
	created, err = client.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: &spec.Name, Attributes: attrs})
	if err != nil {
		return "", "", fmt.Errorf("sqs: create %s: %w", spec.Name, err)
	}
	return *created.QueueUrl, dlqURL, nil
}

// queueAttributes are the CreateQueue attributes for a queue of the given
// kind. Durations are rounded up to whole seconds and retention is kept
// within SQS's 60 s .. 14 days.
func queueAttributes(fifo bool, visibility, retention time.Duration) map[string]string {
	secs := func(d time.Duration) int64 { return int64((d + time.Second - 1) / time.Second) }
	attrs := map[string]string{
		string(types.QueueAttributeNameVisibilityTimeout):      strconv.FormatInt(min(secs(visibility), secs(maxVisibility)), 10),
		string(types.QueueAttributeNameMessageRetentionPeriod): strconv.FormatInt(min(max(secs(retention), 60), secs(deadLetterRetention)), 10),
	}
	if fifo {
		attrs[string(types.QueueAttributeNameFifoQueue)] = "true"
	}
	return attrs
}
