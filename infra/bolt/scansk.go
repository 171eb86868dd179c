package bolt

import (
	"bytes"
	"context"

	"go.etcd.io/bbolt"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// ScanSK implements table.Scanner: it walks the whole items bucket in key
// order and keeps the live items whose sort key is sk. A page ends after
// MaxPageBytes of results; the cursor is the last key looked at.
func (d *DB) ScanSK(ctx context.Context, sk, cursor string) (table.Page, error) {
	if err := ctx.Err(); err != nil {
		return table.Page{}, err
	}
	var from []byte
	if cursor != "" {
		var err error
		if from, err = decodeCursor(cursor); err != nil {
			return table.Page{}, err
		}
	}
	var page table.Page
	now := d.now()
	err := d.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketItems).Cursor()
		k, v := c.First()
		if from != nil {
			if k, v = c.Seek(from); k != nil && bytes.Equal(k, from) {
				k, v = c.Next()
			}
		}
		size := 0
		for ; k != nil; k, v = c.Next() {
			key, err := splitItemKey(k)
			if err != nil {
				return err
			}
			if key.SK != sk {
				continue
			}
			r, err := decodeValue(v)
			if err != nil {
				return err
			}
			if r.expired(now) {
				continue
			}
			it := r.item(key)
			n := table.ItemSize(it)
			if len(page.Items) > 0 && size+n > table.MaxPageBytes {
				page.Next = encodeCursor(bytes.Clone(itemKey(page.Items[len(page.Items)-1].Key())))
				return nil
			}
			page.Items = append(page.Items, it)
			size += n
		}
		return nil
	})
	return page, err
}

var _ table.Scanner = (*DB)(nil)
