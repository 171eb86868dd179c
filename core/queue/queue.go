// Package queue is the port for work queues: at-least-once delivery with a
// visibility timeout, dead-lettering after a number of receives, and FIFO
// groups (messages of one group are delivered in order, one in flight at a
// time). It is what SQS offers; infra/sqs adapts SQS and infra/boltqueue provides
// a durable embedded queue with the same semantics. Both pass the contract
// suite in core/queue/queuetest.
package queue

import (
	"context"
	"errors"
	"time"
)

// MaxBodyBytes is the largest message body: the 256 KiB of older SQS emulators
// (AWS allows 1 MiB now; we design for the smaller).
const MaxBodyBytes = 256 * 1024

// MaxBatch is the most messages one Send or Receive handles in one call to SQS;
// adapters split larger sends themselves.
const MaxBatch = 10

// Errors returned by queues.
var (
	ErrTooLarge = errors.New("queue: message body too large")
	// ErrBadReceipt means the receipt is unknown or no longer valid (the
	// message was deleted, or its visibility timeout passed and it was
	// received again).
	ErrBadReceipt = errors.New("queue: invalid receipt handle")
)

// Message is a message to send.
type Message struct {
	Body []byte
	// Group is the FIFO message group (required on FIFO queues, ignored on
	// standard ones). Messages of one group are delivered in send order and
	// only one of them is in flight at a time.
	Group string
	// DedupID drops a repeat of the same message sent within five minutes on
	// FIFO queues. Empty means the body's hash is used.
	DedupID string
}

// Received is a delivered message. Delete it when done, or it comes back
// after the visibility timeout.
type Received struct {
	ID           string
	Body         []byte
	Group        string
	Receipt      string
	ReceiveCount int // 1 on first delivery
}

// Spec describes a queue; the same spec builds the SQS queue in template.yaml,
// the LocalStack bootstrap and the embedded queue.
type Spec struct {
	Name              string        // base name; FIFO queues end in ".fifo"
	FIFO              bool          // ordered groups and deduplication
	VisibilityTimeout time.Duration // how long a received message stays hidden
	MaxReceives       int           // receives before it moves to the dead-letter queue
	Retention         time.Duration // how long an undelivered message is kept
}

// DeadLetterName is the name of the spec's dead-letter queue.
func (s Spec) DeadLetterName() string {
	if s.FIFO {
		return s.Name[:len(s.Name)-len(".fifo")] + "-dlq.fifo"
	}
	return s.Name + "-dlq"
}

// Queue is the port.
type Queue interface {
	// Send enqueues the messages (any number; adapters batch).
	Send(ctx context.Context, msgs ...Message) error
	// Receive returns up to max (1..MaxBatch) visible messages, waiting up to
	// wait for the first one to arrive. It returns an empty slice on timeout.
	Receive(ctx context.Context, max int, wait time.Duration) ([]Received, error)
	// Delete acknowledges a message.
	Delete(ctx context.Context, receipt string) error
	// SetVisibility hides an in-flight message for d more from now (d = 0
	// makes it visible again at once).
	SetVisibility(ctx context.Context, receipt string, d time.Duration) error
}
