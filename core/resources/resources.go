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

// FanoutQueue wakes the fan-out worker (core/fanout) after each persisted
// event. The work itself is the event stream after the worker's cursor, so
// a message is only a nudge: FIFO with a single message group (one batch in
// flight, so one worker drains the stream at a time and a burst's messages
// are coalesced into one pass), deduplicated per stream position.
var FanoutQueue = queue.Spec{
	Name:              "cirrus-fanout.fifo",
	FIFO:              true,
	VisibilityTimeout: 30 * time.Second,
	MaxReceives:       10,
	Retention:         4 * 24 * time.Hour,
}

// AppServiceQueue carries delivery work for application services (bridges,
// bots). FIFO with one message group per service: each gets its
// transactions in order, one in flight at a time.
var AppServiceQueue = queue.Spec{
	Name:              "cirrus-appservice.fifo",
	FIFO:              true,
	VisibilityTimeout: 60 * time.Second,
	MaxReceives:       50,
	Retention:         4 * 24 * time.Hour,
}

// Queues lists every queue (each also has a dead-letter queue, Spec.DeadLetterName).
var Queues = []queue.Spec{FederationQueue, FanoutQueue, AppServiceQueue}

// MediaBucket is the default S3 bucket name (CIRRUS_MEDIA_BUCKET overrides it).
const MediaBucket = "cirrus-media"

// The media bucket's rules, which template.yaml declares.
const (
	// MediaIncomingPrefix is where MSC3870 upload URLs (core/media,
	// upload_url.go) put an upload's bytes until the client's /complete
	// moves them under their content key and deletes them.
	MediaIncomingPrefix = "incoming/"
	// MediaIncomingExpiryDays: objects still under MediaIncomingPrefix
	// after this many days belong to uploads never completed (the
	// reservation they were made for lasts a day) and are deleted by a
	// lifecycle rule.
	MediaIncomingExpiryDays = 1
)

// MediaCORSMethods are the methods browsers use on the bucket's presigned
// URLs: GET/HEAD for redirected downloads, PUT for MSC3870 upload URLs.
var MediaCORSMethods = []string{"GET", "HEAD", "PUT"}
