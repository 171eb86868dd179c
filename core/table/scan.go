package table

import "context"

// Scanner is an optional capability of an engine: reading every item with
// a given sort key, across all partitions, page by page. It costs a read of
// the whole table, so only one-off maintenance (data migrations that
// backfill a new index) uses it; serving paths never scan.
type Scanner interface {
	// ScanSK returns one page of the live items whose sort key is sk, in no
	// particular order. Next is empty when the scan is done; a page may be
	// empty while Next is not.
	ScanSK(ctx context.Context, sk, cursor string) (Page, error)
}
