// Package resources defines, once, the cloud resources Cirrus needs: the
// table, the queues and the media bucket. template.yaml, the LocalStack
// bootstrap and the embedded engine are all checked against these values.
package resources

import (
	"time"

	"github.com/cirrus-matrix/cirrus/core/queue"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// TableSpec describes the single DynamoDB table.
type TableSpec struct {
	// Name is the default table name (CIRRUS_TABLE overrides it).
	Name string
	// PK and SK are the key attribute names (both strings).
	PK, SK string
	// Index is the one global secondary index, keyed by IndexPK/IndexSK (strings),
	// projecting all attributes.
	Index, IndexPK, IndexSK string
	// TTLAttr is the attribute DynamoDB's TTL deletes expired items by.
	TTLAttr string
}

// Table is the homeserver's table.
var Table = TableSpec{
	Name:    "cirrus",
	PK:      table.AttrPK,
	SK:      table.AttrSK,
	Index:   table.IndexName,
	IndexPK: table.AttrGPK,
	IndexSK: table.AttrGSK,
	TTLAttr: table.AttrTTL,
}

// FederationQueue carries outbound federation work. It is FIFO with the
// destination server as the message group: each destination gets its
// transactions in order, one in flight at a time.
var FederationQueue = queue.Spec{
	Name:              "cirrus-federation.fifo",
	FIFO:              true,
	VisibilityTimeout: 60 * time.Second,
	MaxReceives:       50,
	Retention:         4 * 24 * time.Hour,
}

// FanoutQueue carries every persisted event to the worker that wakes /sync,
// evaluates push rules and counts unread messages. FIFO grouped by room.
var FanoutQueue = queue.Spec{
	Name:              "cirrus-fanout.fifo",
	FIFO:              true,
	VisibilityTimeout: 30 * time.Second,
	MaxReceives:       10,
	Retention:         4 * 24 * time.Hour,
}

// Queues lists every queue (each also has a dead-letter queue, Spec.DeadLetterName).
var Queues = []queue.Spec{FederationQueue, FanoutQueue}

// MediaBucket is the default S3 bucket name (CIRRUS_MEDIA_BUCKET overrides it).
const MediaBucket = "cirrus-media"
