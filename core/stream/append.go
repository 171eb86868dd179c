package stream

import (
	"context"
	"errors"
	"fmt"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// maxAppendAttempts bounds retries when readers keep voiding our slots (only
// possible if commits take longer than the grace period).
const maxAppendAttempts = 10

// Append reserves a position (Reserve) and commits, in one transaction, the stream
// entry build returns together with build's other operations. If a reader
// voided the slot first it retries with a new position. If one of build's
// own operations fails its condition, the position is given up and the
// *table.TxError is returned with Index relative to build's operations.
func (s *Stream) Append(ctx context.Context, build func(pos int64) (entry []byte, ops []table.Op, err error)) (int64, error) {
	for attempt := 0; attempt < maxAppendAttempts; attempt++ {
		pos, err := s.Reserve(ctx)
		if err != nil {
			return 0, err
		}
		entry, ops, err := build(pos)
		if err != nil {
			_ = s.Void(ctx, pos)
			return 0, err
		}
		all := append([]table.Op{s.ClaimOp(pos, entry)}, ops...)
		err = s.T.Transact(ctx, all)
		var txe *table.TxError
		switch {
		case err == nil:
			return pos, nil
		case errors.As(err, &txe) && txe.Index == 0:
			continue // a reader voided our slot: take another
		case errors.As(err, &txe):
			_ = s.Void(ctx, pos)
			return 0, &table.TxError{Index: txe.Index - 1}
		case errors.Is(err, table.ErrConflict):
			_ = s.Void(ctx, pos)
			continue
		default:
			_ = s.Void(ctx, pos)
			return 0, err
		}
	}
	return 0, fmt.Errorf("stream %s: could not commit after %d attempts", s.Name, maxAppendAttempts)
}

// Trim deletes the entries (committed or void) at positions after..upTo,
// for streams whose readers acknowledge what they have read (to-device
// inboxes). Readers must never read such a stream from before upTo again.
func (s *Stream) Trim(ctx context.Context, after, upTo int64) error {
	if upTo <= after {
		return nil
	}
	q := table.Query{PK: s.pk(), From: PosKey(after + 1), To: PosKey(upTo)}
	for {
		page, err := s.T.Query(ctx, q)
		if err != nil {
			return err
		}
		for _, it := range page.Items {
			if err := s.T.Delete(ctx, it.Key(), table.Cond{}); err != nil {
				return err
			}
		}
		if page.Next == "" {
			return nil
		}
		q.Cursor = page.Next
	}
}
