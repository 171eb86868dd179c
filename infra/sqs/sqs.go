// Package sqs adapts Amazon SQS to queue.Queue.
//
// Bodies are sent as SQS message text when they are valid text for SQS
// (UTF-8 without the control characters SQS refuses); other bodies are sent
// base64-encoded and flagged with a message attribute, so they cost 4/3 of
// their size against the queue's MaximumMessageSize. (An empty body, which
// SQS refuses, is flagged likewise.)
package sqs

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"

	"github.com/cirrus-matrix/cirrus/core/queue"
)

const (
	// maxBatchPayload is SQS's limit on the bodies and attributes of one
	// SendMessageBatch.
	maxBatchPayload = 1024 * 1024
	// maxWait is the longest long poll SQS allows.
	maxWait = 20 * time.Second
	// maxVisibility is the longest visibility timeout SQS allows.
	maxVisibility = 12 * time.Hour
	// encodingAttr marks a base64-encoded body.
	encodingAttr = "cirrus-encoding"
	// sendAttempts bounds the tries of a batch entry SQS failed on its side.
	sendAttempts = 3
)

// ErrNoGroup is returned when a message for a FIFO queue has no group.
var ErrNoGroup = errors.New("sqs: message for a FIFO queue needs a group")

// Queue is one SQS queue. It implements queue.Queue.
type Queue struct {
	client *awssqs.Client
	url    string
	spec   queue.Spec
	stats  counters
}

var _ queue.Queue = (*Queue)(nil)

// New returns the queue at queueURL, described by spec (FIFO decides whether
// groups and deduplication ids are sent; VisibilityTimeout, if at least a
// second, is requested on every receive).
func New(client *awssqs.Client, queueURL string, spec queue.Spec) *Queue {
	return &Queue{client: client, url: queueURL, spec: spec}
}

// Stats counts the SQS requests a Queue has made, retries included.
type Stats struct {
	SendMessageBatch        int64
	ReceiveMessage          int64
	DeleteMessage           int64
	ChangeMessageVisibility int64
}

// Total is the number of requests.
func (s Stats) Total() int64 {
	return s.SendMessageBatch + s.ReceiveMessage + s.DeleteMessage + s.ChangeMessageVisibility
}

// Sub returns the requests made since before was taken.
func (s Stats) Sub(before Stats) Stats {
	return Stats{
		SendMessageBatch:        s.SendMessageBatch - before.SendMessageBatch,
		ReceiveMessage:          s.ReceiveMessage - before.ReceiveMessage,
		DeleteMessage:           s.DeleteMessage - before.DeleteMessage,
		ChangeMessageVisibility: s.ChangeMessageVisibility - before.ChangeMessageVisibility,
	}
}

type counters struct {
	send, receive, delete, visibility atomic.Int64
}

// Stats returns the request counts so far.
func (q *Queue) Stats() Stats {
	return Stats{
		SendMessageBatch:        q.stats.send.Load(),
		ReceiveMessage:          q.stats.receive.Load(),
		DeleteMessage:           q.stats.delete.Load(),
		ChangeMessageVisibility: q.stats.visibility.Load(),
	}
}

// count is a per-call client option that adds one to c for every HTTP
// attempt of the call: it sits after the SDK's retry middleware.
func count(c *atomic.Int64) func(*awssqs.Options) {
	return func(o *awssqs.Options) {
		o.APIOptions = append(o.APIOptions, func(s *middleware.Stack) error {
			return s.Finalize.Add(middleware.FinalizeMiddlewareFunc("cirrusCountRequests",
				func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
					c.Add(1)
					return next.HandleFinalize(ctx, in)
				}), middleware.After)
		})
	}
}

// Send sends the messages in batches of up to ten (and 1 MiB). If any body is
// larger than queue.MaxBodyBytes, or a FIFO message has no group, nothing is
// sent. Entries SQS fails on its
// side are retried; if some still fail, the error names them and the rest
// have been sent.
func (q *Queue) Send(ctx context.Context, msgs ...queue.Message) error {
	entries := make([]types.SendMessageBatchRequestEntry, len(msgs))
	sizes := make([]int, len(msgs))
	for i, m := range msgs {
		if len(m.Body) > queue.MaxBodyBytes {
			return fmt.Errorf("%w: %d bytes", queue.ErrTooLarge, len(m.Body))
		}
		if q.spec.FIFO && m.Group == "" {
			return ErrNoGroup
		}
		e := types.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i))}
		body, enc := string(m.Body), ""
		switch {
		case len(m.Body) == 0: // SQS refuses empty bodies
			body, enc = "-", "empty"
		case !isSQSText(m.Body):
			body, enc = base64.StdEncoding.EncodeToString(m.Body), "base64"
		}
		if enc != "" {
			e.MessageAttributes = map[string]types.MessageAttributeValue{
				encodingAttr: {DataType: aws.String("String"), StringValue: aws.String(enc)},
			}
			sizes[i] = len(encodingAttr) + len("String") + len(enc)
		}
		e.MessageBody = aws.String(body)
		sizes[i] += len(body)
		if q.spec.FIFO {
			e.MessageGroupId = aws.String(m.Group)
			e.MessageDeduplicationId = aws.String(m.DedupID)
			if m.DedupID == "" {
				sum := sha256.Sum256(m.Body)
				e.MessageDeduplicationId = aws.String(hex.EncodeToString(sum[:]))
			}
		}
		entries[i] = e
	}
	var errs []error
	for start := 0; start < len(entries); {
		end, size := start, 0
		for end < len(entries) && end-start < queue.MaxBatch && (end == start || size+sizes[end] <= maxBatchPayload) {
			size += sizes[end]
			end++
		}
		if err := q.sendBatch(ctx, entries[start:end]); err != nil {
			if ctx.Err() != nil || !isEntryErrors(err) {
				return errors.Join(append(errs, err)...)
			}
			errs = append(errs, err)
		}
		start = end
	}
	return errors.Join(errs...)
}

// entryErrors reports entries SQS refused.
type entryErrors struct{ errs []error }

func (e *entryErrors) Error() string { return errors.Join(e.errs...).Error() }
func (e *entryErrors) Unwrap() []error {
	return e.errs
}

func isEntryErrors(err error) bool {
	var ee *entryErrors
	return errors.As(err, &ee)
}

func (q *Queue) sendBatch(ctx context.Context, entries []types.SendMessageBatchRequestEntry) error {
	for attempt := 1; ; attempt++ {
		out, err := q.client.SendMessageBatch(ctx, &awssqs.SendMessageBatchInput{
			QueueUrl: &q.url,
			Entries:  entries,
		}, count(&q.stats.send))
		if err != nil {
			return fmt.Errorf("sqs: SendMessageBatch: %w", mapError(err))
		}
		if len(out.Failed) == 0 {
			return nil
		}
		byID := make(map[string]types.SendMessageBatchRequestEntry, len(entries))
		for _, e := range entries {
			byID[*e.Id] = e
		}
		var retry []types.SendMessageBatchRequestEntry
		var errs []error
		for _, f := range out.Failed {
			id, code, msg := aws.ToString(f.Id), aws.ToString(f.Code), aws.ToString(f.Message)
			if !f.SenderFault && attempt < sendAttempts {
				if e, ok := byID[id]; ok {
					retry = append(retry, e)
					continue
				}
			}
			err := fmt.Errorf("sqs: message %s: %s: %s", id, code, msg)
			if strings.Contains(msg, "must be shorter than") {
				err = fmt.Errorf("%w (%v)", queue.ErrTooLarge, err)
			}
			errs = append(errs, err)
		}
		if len(errs) > 0 {
			return &entryErrors{errs}
		}
		select {
		case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
		entries = retry
	}
}

// isSQSText reports whether b can be an SQS message body as it is: SQS
// accepts UTF-8 of #x9, #xA, #xD, #x20-#xD7FF, #xE000-#xFFFD and
// #x10000-#x10FFFF.
func isSQSText(b []byte) bool {
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		switch {
		case r == utf8.RuneError && n <= 1:
			return false
		case r == 0x9 || r == 0xA || r == 0xD:
		case r < 0x20, r >= 0xD800 && r < 0xE000, r == 0xFFFE, r == 0xFFFF:
			return false
		}
		b = b[n:]
	}
	return true
}

// Receive long-polls for up to limit messages (clamped to 1..10). SQS waits
// whole seconds: wait is rounded down and capped at 20 s, so a wait under a
// second is a short poll.
func (q *Queue) Receive(ctx context.Context, limit int, wait time.Duration) ([]queue.Received, error) {
	in := &awssqs.ReceiveMessageInput{
		QueueUrl:            &q.url,
		MaxNumberOfMessages: int32(min(max(limit, 1), queue.MaxBatch)),
		WaitTimeSeconds:     int32(min(max(wait, 0), maxWait) / time.Second),
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{
			types.MessageSystemAttributeNameApproximateReceiveCount,
			types.MessageSystemAttributeNameMessageGroupId,
		},
		// The same through the deprecated field, which is all
		// local-aws-sqs reads; SQS accepts both.
		AttributeNames: []types.QueueAttributeName{
			types.QueueAttributeName(types.MessageSystemAttributeNameApproximateReceiveCount),
			types.QueueAttributeName(types.MessageSystemAttributeNameMessageGroupId),
		},
		MessageAttributeNames: []string{encodingAttr},
	}
	if v := q.spec.VisibilityTimeout; v >= time.Second {
		in.VisibilityTimeout = int32(min(v, maxVisibility) / time.Second)
	}
	out, err := q.client.ReceiveMessage(ctx, in, count(&q.stats.receive))
	if err != nil {
		return nil, fmt.Errorf("sqs: ReceiveMessage: %w", err)
	}
	rs := make([]queue.Received, 0, len(out.Messages))
	for _, m := range out.Messages {
		r := queue.Received{
			ID:      aws.ToString(m.MessageId),
			Body:    []byte(aws.ToString(m.Body)),
			Group:   m.Attributes[string(types.MessageSystemAttributeNameMessageGroupId)],
			Receipt: aws.ToString(m.ReceiptHandle),
		}
		r.ReceiveCount, _ = strconv.Atoi(m.Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)])
		switch a := m.MessageAttributes[encodingAttr]; aws.ToString(a.StringValue) {
		case "base64":
			if r.Body, err = base64.StdEncoding.DecodeString(aws.ToString(m.Body)); err != nil {
				return nil, fmt.Errorf("sqs: message %s: bad base64 body: %w", r.ID, err)
			}
		case "empty":
			r.Body = []byte{}
		}
		rs = append(rs, r)
	}
	return rs, nil
}

// Delete deletes a received message. SQS may accept a receipt of a message
// that is already deleted; an unknown, malformed or (on FIFO queues)
// superseded receipt is queue.ErrBadReceipt.
func (q *Queue) Delete(ctx context.Context, receipt string) error {
	_, err := q.client.DeleteMessage(ctx, &awssqs.DeleteMessageInput{
		QueueUrl:      &q.url,
		ReceiptHandle: &receipt,
	}, count(&q.stats.delete))
	if err != nil {
		return fmt.Errorf("sqs: DeleteMessage: %w", mapError(err))
	}
	return nil
}

// SetVisibility hides a received message for d from now, rounded up to whole
// seconds and capped at 12 hours; d <= 0 makes it visible at once.
func (q *Queue) SetVisibility(ctx context.Context, receipt string, d time.Duration) error {
	secs := int32((min(max(d, 0), maxVisibility) + time.Second - 1) / time.Second)
	_, err := q.client.ChangeMessageVisibility(ctx, &awssqs.ChangeMessageVisibilityInput{
		QueueUrl:          &q.url,
		ReceiptHandle:     &receipt,
		VisibilityTimeout: secs,
	}, count(&q.stats.visibility))
	if err != nil {
		return fmt.Errorf("sqs: ChangeMessageVisibility: %w", mapError(err))
	}
	return nil
}

// mapError turns SQS's invalid-receipt errors into queue.ErrBadReceipt,
// keeping the original text. SQS reports a bad receipt as
// ReceiptHandleIsInvalid, as MessageNotInflight, or (FIFO queues, stale or
// deleted receipts) as InvalidParameterValue about the ReceiptHandle.
func mapError(err error) error {
	var api smithy.APIError
	if !errors.As(err, &api) {
		return err
	}
	bad := false
	switch code := api.ErrorCode(); {
	case code == "ReceiptHandleIsInvalid", code == "MessageNotInflight":
		bad = true
	case code == "InvalidParameterValue":
		bad = strings.Contains(api.ErrorMessage(), "ReceiptHandle")
	}
	if bad {
		return fmt.Errorf("%w (%v)", queue.ErrBadReceipt, err)
	}
	return err
}
