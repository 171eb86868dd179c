package fanout

import (
	"context"
	"errors"

	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/stream"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// StartAtHead places the cursor at the event stream's head when there is
// none yet (the format 2 migration, core/migrate). Stores written before the
// fan-out worker existed had each event's push and federation work done as
// it was persisted: replaying their history would send every old event to
// other servers again and notify every user again. On a new store the head
// is 0, so nothing is skipped.
func StartAtHead(ctx context.Context, t table.Table) error {
	head, err := (&stream.Stream{T: t, Name: rooms.EventsStream}).Latest(ctx)
	if err != nil {
		return err
	}
	err = t.Put(ctx, table.Item{PK: cursorKey.PK, SK: cursorKey.SK, Num: head, Version: 1}, table.IfNotExists())
	if errors.Is(err, table.ErrConditionFailed) {
		return nil // a cursor exists: another process migrated, or the worker already ran
	}
	return err
}
