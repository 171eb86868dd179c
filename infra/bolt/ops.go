package bolt

import (
	"context"
	"fmt"

	"go.etcd.io/bbolt"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// bkts holds the table's buckets within one transaction.
type bkts struct{ items, index, ttl *bbolt.Bucket }

func buckets(tx *bbolt.Tx) bkts {
	return bkts{tx.Bucket(bucketItems), tx.Bucket(bucketIndex), tx.Bucket(bucketTTL)}
}

// load reads the record at ikey, expired or not.
func (b bkts) load(ikey []byte) (r record, found bool, err error) {
	v := b.items.Get(ikey)
	if v == nil {
		return record{}, false, nil
	}
	r, err = decodeValue(v)
	return r, err == nil, err
}

// remove deletes the item at ikey, whose current record is old, together
// with its index and TTL entries.
func (b bkts) remove(ikey []byte, old *record) error {
	if old.gpk != "" {
		if err := b.index.Delete(indexKey(old.gpk, old.gsk, ikey)); err != nil {
			return err
		}
	}
	if old.ttl != 0 {
		if err := b.ttl.Delete(ttlKey(old.ttl, ikey)); err != nil {
			return err
		}
	}
	return b.items.Delete(ikey)
}

// store writes it at ikey, replacing old (nil when there is no record) and
// keeping the index and TTL entries in step.
func (b bkts) store(ikey []byte, old *record, it *table.Item) error {
	sameIndex := old != nil && old.gpk == it.GPK && old.gsk == it.GSK
	sameTTL := old != nil && old.ttl == it.TTL
	if old != nil && old.gpk != "" && !sameIndex {
		if err := b.index.Delete(indexKey(old.gpk, old.gsk, ikey)); err != nil {
			return err
		}
	}
	if old != nil && old.ttl != 0 && !sameTTL {
		if err := b.ttl.Delete(ttlKey(old.ttl, ikey)); err != nil {
			return err
		}
	}
	if err := b.items.Put(ikey, encodeValue(it)); err != nil {
		return err
	}
	if it.GPK != "" && !sameIndex {
		if err := b.index.Put(indexKey(it.GPK, it.GSK, ikey), nil); err != nil {
			return err
		}
	}
	if it.TTL != 0 && !sameTTL {
		if err := b.ttl.Put(ttlKey(it.TTL, ikey), nil); err != nil {
			return err
		}
	}
	return nil
}

// peek views a record as an Item without copying Data; for use inside the
// transaction only.
func (r *record) peek(k table.Key) table.Item {
	return table.Item{PK: k.PK, SK: k.SK, GPK: r.gpk, GSK: r.gsk, Data: r.data, Num: r.num, Version: r.version, TTL: r.ttl}
}

// txOutcome is what a write transaction reports back through its closure.
// The closure may run several times, so it is reset on every run.
type txOutcome struct {
	failed int   // index of the first op whose condition failed, or -1
	tooBig error // an Add would grow an item over MaxItemSize
	num    int64 // Num after the last OpAdd
}

// exec applies ops (already validated, with distinct keys) atomically.
func (d *DB) exec(ctx context.Context, ops []table.Op) (txOutcome, error) {
	if err := ctx.Err(); err != nil {
		return txOutcome{}, err
	}
	keys := make([][]byte, len(ops))
	for i := range ops {
		keys[i] = itemKey(ops[i].Target())
	}
	var out txOutcome
	err := d.Batch(func(tx *bbolt.Tx) error {
		out = txOutcome{failed: -1}
		return d.run(tx, ops, keys, &out)
	})
	return out, err
}

// run checks every condition first and writes only if all hold, so a failed
// transaction leaves nothing behind even inside a shared batch.
func (d *DB) run(tx *bbolt.Tx, ops []table.Op, keys [][]byte, out *txOutcome) error {
	now := d.now()
	b := buckets(tx)
	olds := make([]record, len(ops))
	found := make([]bool, len(ops))
	for i := range ops {
		r, ok, err := b.load(keys[i])
		if err != nil {
			return fmt.Errorf("%w at %s", err, ops[i].Target())
		}
		olds[i], found[i] = r, ok
		var cur *table.Item
		if ok && !r.expired(now) {
			it := r.peek(ops[i].Target())
			cur = &it
		}
		if !ops[i].Cond.Holds(cur) {
			out.failed = i
			return nil
		}
		if ops[i].Kind == table.OpAdd && cur != nil {
			next := *cur
			next.Num += ops[i].Delta
			if s := table.ItemSize(next); s > table.MaxItemSize {
				out.tooBig = fmt.Errorf("%w: adding to %s makes it %d bytes", table.ErrTooLarge, next.Key(), s)
				return nil
			}
		}
		if ops[i].Kind == table.OpPutRaise {
			if err := d.checkRaise(b, ops[i].Key, ops[i].Delta, now, out); err != nil || out.tooBig != nil {
				return err
			}
		}
	}
	for i := range ops {
		op := &ops[i]
		var old *record
		if found[i] {
			old = &olds[i]
		}
		live := old != nil && !old.expired(now)
		var err error
		switch op.Kind {
		case table.OpPut:
			err = b.store(keys[i], old, &op.Item)
			d.seq.wrote(keys[i], op.Item.Num)
		case table.OpPutRaise:
			if err = b.store(keys[i], old, &op.Item); err == nil {
				d.seq.wrote(keys[i], op.Item.Num)
				err = d.raise(b, op.Key, op.Delta, now)
			}
		case table.OpDelete:
			if old != nil {
				err = b.remove(keys[i], old)
			}
		case table.OpAdd:
			next := table.Item{PK: op.Key.PK, SK: op.Key.SK}
			if live {
				next = old.peek(op.Key)
			}
			// A counter Next hands numbers out of counts on from the
			// highest it handed out, so Add and Next never repeat a number.
			next.Num = d.seq.add(keys[i], next.Num, op.Delta)
			out.num = next.Num
			err = b.store(keys[i], old, &next)
		case table.OpCheck:
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// checkRaise records in out.tooBig if raising the counter at k to n would
// grow it over the item size limit.
func (d *DB) checkRaise(b bkts, k table.Key, n, now int64, out *txOutcome) error {
	r, found, err := b.load(itemKey(k))
	if err != nil {
		return fmt.Errorf("%w at %s", err, k)
	}
	if !found || r.expired(now) || r.num >= n {
		return nil
	}
	next := r.peek(k)
	next.Num = n
	if s := table.ItemSize(next); s > table.MaxItemSize {
		out.tooBig = fmt.Errorf("%w: raising %s makes it %d bytes", table.ErrTooLarge, k, s)
	}
	return nil
}

// raise sets the Num of the counter at k to n unless it is already at
// least n (OpPutRaise). It reads the counter afresh, since an earlier
// operation of the same transaction may have raised it.
func (d *DB) raise(b bkts, k table.Key, n, now int64) error {
	ik := itemKey(k)
	r, found, err := b.load(ik)
	if err != nil {
		return fmt.Errorf("%w at %s", err, k)
	}
	live := found && !r.expired(now)
	if live && r.num >= n {
		return nil
	}
	next := table.Item{PK: k.PK, SK: k.SK, Num: n}
	if live {
		next = r.peek(k)
		next.Num = n
	}
	var old *record
	if found {
		old = &r
	}
	if err := b.store(ik, old, &next); err != nil {
		return err
	}
	d.seq.wrote(ik, n)
	return nil
}

// Get returns the item at k or table.ErrNotFound.
func (d *DB) Get(ctx context.Context, k table.Key) (table.Item, error) {
	items, err := d.getMany(ctx, []table.Key{k})
	if err != nil {
		return table.Item{}, err
	}
	if len(items) == 0 {
		return table.Item{}, fmt.Errorf("%w: %s", table.ErrNotFound, k)
	}
	return items[0], nil
}

// GetMany returns the live items among keys, in the order of keys.
func (d *DB) GetMany(ctx context.Context, keys []table.Key) ([]table.Item, error) {
	return d.getMany(ctx, keys)
}

func (d *DB) getMany(ctx context.Context, keys []table.Key) ([]table.Item, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, k := range keys {
		if err := k.Validate(); err != nil {
			return nil, err
		}
	}
	if len(keys) == 0 {
		return nil, nil
	}
	out := make([]table.Item, 0, len(keys))
	err := d.db.View(func(tx *bbolt.Tx) error {
		now := d.now()
		items := tx.Bucket(bucketItems)
		for _, k := range keys {
			v := items.Get(itemKey(k))
			if v == nil {
				continue
			}
			r, err := decodeValue(v)
			if err != nil {
				return fmt.Errorf("%w at %s", err, k)
			}
			if !r.expired(now) {
				out = append(out, r.item(k))
			}
		}
		return nil
	})
	return out, err
}

// Put writes it if c holds, else returns table.ErrConditionFailed.
func (d *DB) Put(ctx context.Context, it table.Item, c table.Cond) error {
	if err := it.Validate(); err != nil {
		return err
	}
	out, err := d.exec(ctx, []table.Op{{Kind: table.OpPut, Item: it, Cond: c}})
	if err != nil {
		return err
	}
	if out.failed >= 0 {
		return fmt.Errorf("%w: put %s %s", table.ErrConditionFailed, it.Key(), c)
	}
	return nil
}

// Delete removes the item at k if c holds, else returns
// table.ErrConditionFailed.
func (d *DB) Delete(ctx context.Context, k table.Key, c table.Cond) error {
	if err := k.Validate(); err != nil {
		return err
	}
	out, err := d.exec(ctx, []table.Op{{Kind: table.OpDelete, Key: k, Cond: c}})
	if err != nil {
		return err
	}
	if out.failed >= 0 {
		return fmt.Errorf("%w: delete %s %s", table.ErrConditionFailed, k, c)
	}
	return nil
}

// Add adds delta to the Num of the item at k, creating it if it is missing
// (or expired), and returns the new Num.
func (d *DB) Add(ctx context.Context, k table.Key, delta int64) (int64, error) {
	if err := k.Validate(); err != nil {
		return 0, err
	}
	out, err := d.exec(ctx, []table.Op{{Kind: table.OpAdd, Key: k, Delta: delta}})
	if err != nil {
		return 0, err
	}
	if out.tooBig != nil {
		return 0, out.tooBig
	}
	return out.num, nil
}

// Transact applies all ops or none; a failed condition yields a
// *table.TxError naming the first failing op.
func (d *DB) Transact(ctx context.Context, ops []table.Op) error {
	if err := table.ValidateTx(ops); err != nil {
		return err
	}
	out, err := d.exec(ctx, ops)
	switch {
	case err != nil:
		return err
	case out.failed >= 0:
		return &table.TxError{Index: out.failed}
	case out.tooBig != nil:
		return out.tooBig
	}
	return nil
}
