package sqs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/cirrus-matrix/cirrus/core/queue"
	"github.com/cirrus-matrix/cirrus/core/queue/queuetest"
	"github.com/cirrus-matrix/cirrus/infra/awstest"
)

// newTestQueue creates a randomly named queue and dead-letter queue from
// spec on the stand-in, deleted when the test ends.
func newTestQueue(t *testing.T, spec queue.Spec) (*Queue, *Queue) {
	t.Helper()
	client := awssqs.NewFromConfig(awstest.Require(t, "SQS"))
	var b [6]byte
	rand.Read(b[:])
	suffix := ""
	if spec.FIFO {
		suffix = ".fifo"
	}
	spec.Name = strings.TrimSuffix(spec.Name, ".fifo") + "-" + hex.EncodeToString(b[:]) + suffix
	ctx := context.Background()
	url, dlqURL, err := EnsureQueue(ctx, client, spec)
	if err != nil {
		t.Fatalf("EnsureQueue: %v", err)
	}
	t.Cleanup(func() {
		for _, u := range []string{url, dlqURL} {
			if _, err := client.DeleteQueue(ctx, &awssqs.DeleteQueueInput{QueueUrl: &u}); err != nil {
				t.Errorf("DeleteQueue %s: %v", u, err)
			}
		}
	})
	dlqSpec := queue.Spec{Name: spec.DeadLetterName(), FIFO: spec.FIFO, VisibilityTimeout: spec.VisibilityTimeout}
	return New(client, url, spec), New(client, dlqURL, dlqSpec)
}

// noGroupLock is set unless the tests run against real SQS.
const noGroupLock = "local-aws-sqs 2.0.2 does not lock FIFO groups: it hands out the next message of a group while an earlier one is in flight (set SQS_REAL=1 against real SQS to run this)"

func TestContract(t *testing.T) {
	opts := queuetest.Options{NoGroupLock: noGroupLock}
	if os.Getenv("SQS_REAL") != "" {
		opts = queuetest.Options{}
	}
	queuetest.RunWith(t, func(t *testing.T, spec queue.Spec) (queue.Queue, queue.Queue) {
		return newTestQueue(t, spec)
	}, opts)
}

func TestEnsureQueueIdempotent(t *testing.T) {
	q, dlq := newTestQueue(t, queue.Spec{Name: "ensure.fifo", FIFO: true, VisibilityTimeout: 30 * time.Second, MaxReceives: 3, Retention: time.Hour})
	// The same spec again returns the same queues.
	url, dlqURL, err := EnsureQueue(context.Background(), q.client, q.spec)
	if err != nil {
		t.Fatal(err)
	}
	if url != q.url || dlqURL != dlq.url {
		t.Fatalf("second EnsureQueue = %s, %s; want %s, %s", url, dlqURL, q.url, dlq.url)
	}
	attrs, err := q.client.GetQueueAttributes(context.Background(), &awssqs.GetQueueAttributesInput{
		QueueUrl: &q.url, AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameAll},
	})
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"VisibilityTimeout": "30", "MessageRetentionPeriod": "3600", "FifoQueue": "true"} {
		if got := attrs.Attributes[k]; got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if p := attrs.Attributes["RedrivePolicy"]; !strings.Contains(p, `"maxReceiveCount":3`) || !strings.Contains(p, dlq.spec.Name) {
		t.Errorf("RedrivePolicy = %s", p)
	}
}

// TestStats checks the request counts: a send of 25 small messages is three
// SendMessageBatch calls; bodies over 1 MiB in total split further.
func TestStats(t *testing.T) {
	q, _ := newTestQueue(t, queue.Spec{Name: "stats", VisibilityTimeout: 30 * time.Second, Retention: time.Hour})
	ctx := context.Background()
	var msgs []queue.Message
	for i := range 25 {
		msgs = append(msgs, queue.Message{Body: []byte(fmt.Sprint("m", i))})
	}
	if err := q.Send(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	big := make([]queue.Message, 5)
	for i := range big {
		big[i] = queue.Message{Body: []byte(strings.Repeat("x", queue.MaxBodyBytes))}
	}
	before := q.Stats()
	if err := q.Send(ctx, big...); err != nil { // 4 fit in 1 MiB, then 1
		t.Fatal(err)
	}
	if got := q.Stats().Sub(before).SendMessageBatch; got != 2 {
		t.Errorf("5 bodies of 256 KiB took %d SendMessageBatch calls, want 2", got)
	}
	rs, err := q.Receive(ctx, 10, 0)
	if err != nil || len(rs) == 0 {
		t.Fatalf("Receive: %d, %v", len(rs), err)
	}
	if err := q.SetVisibility(ctx, rs[0].Receipt, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := q.Delete(ctx, rs[0].Receipt); err != nil {
		t.Fatal(err)
	}
	want := Stats{SendMessageBatch: 5, ReceiveMessage: 1, DeleteMessage: 1, ChangeMessageVisibility: 1}
	if got := q.Stats(); got != want || got.Total() != 8 {
		t.Errorf("Stats = %+v (total %d), want %+v", got, got.Total(), want)
	}
}

func TestSendEntryErrors(t *testing.T) {
	q, _ := newTestQueue(t, queue.Spec{Name: "fail.fifo", FIFO: true, VisibilityTimeout: 30 * time.Second, Retention: time.Hour})
	ctx := context.Background()
	// A FIFO message without a group is refused before anything is sent.
	before := q.Stats()
	if err := q.Send(ctx, queue.Message{Body: []byte("ok"), Group: "g"}, queue.Message{Body: []byte("no group")}); !errors.Is(err, ErrNoGroup) {
		t.Fatalf("Send without a group = %v, want ErrNoGroup", err)
	}
	if n := q.Stats().Sub(before).Total(); n != 0 {
		t.Fatalf("refused Send made %d requests", n)
	}

	// A queue with a 1 KiB limit refuses the larger entry of a batch alone:
	// that entry's error is ErrTooLarge and the rest is sent.
	client := q.client
	name := "small-" + strings.TrimSuffix(strings.TrimPrefix(q.spec.Name, "fail-"), ".fifo")
	created, err := client.CreateQueue(ctx, &awssqs.CreateQueueInput{
		QueueName:  &name,
		Attributes: map[string]string{"MaximumMessageSize": "1024"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.DeleteQueue(ctx, &awssqs.DeleteQueueInput{QueueUrl: created.QueueUrl}) })
	small := New(client, *created.QueueUrl, queue.Spec{Name: name, VisibilityTimeout: 30 * time.Second})
	err = small.Send(ctx, queue.Message{Body: []byte("fits")}, queue.Message{Body: []byte(strings.Repeat("x", 2000))})
	if !errors.Is(err, queue.ErrTooLarge) || !strings.Contains(err.Error(), "message 1") {
		t.Fatalf("Send = %v, want ErrTooLarge for message 1", err)
	}
	rs, err := small.Receive(ctx, 10, 0)
	if err != nil || len(rs) != 1 || string(rs[0].Body) != "fits" {
		t.Fatalf("Receive = %v, %v; want the entry that fits", rs, err)
	}
}

func TestIsSQSText(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"", true},
		{"plain {\"json\": 1}\n\t\r", true},
		{"snow \u2603 and \U0001F600", true},
		{"nul \x00", false},
		{"bell \x07", false},
		{"\xff\xfe", false},
		{"\uFFFE", false},
		{"\uFFFD", true},
		{"\xed\xa0\x80", false}, // an encoded surrogate
	}
	for _, tc := range tests {
		if got := isSQSText([]byte(tc.in)); got != tc.want {
			t.Errorf("isSQSText(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestQueueAttributes(t *testing.T) {
	tests := []struct {
		fifo                  bool
		visibility, retention time.Duration
		want                  map[string]string
	}{
		{true, 1500 * time.Millisecond, 4 * 24 * time.Hour, map[string]string{"VisibilityTimeout": "2", "MessageRetentionPeriod": "345600", "FifoQueue": "true"}},
		{false, 0, time.Second, map[string]string{"VisibilityTimeout": "0", "MessageRetentionPeriod": "60"}},
		{false, 13 * time.Hour, 30 * 24 * time.Hour, map[string]string{"VisibilityTimeout": "43200", "MessageRetentionPeriod": "1209600"}},
	}
	for _, tc := range tests {
		got := queueAttributes(tc.fifo, tc.visibility, tc.retention)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("queueAttributes(%v, %v, %v) = %v, want %v", tc.fifo, tc.visibility, tc.retention, got, tc.want)
		}
	}
}
