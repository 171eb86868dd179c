package tabletest_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/core/table/tabletest"
)

// TestReference runs the suite against refTable, a deliberately naive
// in-memory model of the port, to check the suite itself.
func TestReference(t *testing.T) {
	shared := &refTable{items: map[table.Key]table.Item{}}
	tabletest.Run(t, func(*testing.T) table.Table { return shared })
}

type refTable struct {
	mu    sync.Mutex
	items map[table.Key]table.Item
	seq   map[table.Key]int64 // Next's counters: highest number handed out or stored
}

// Next implements table.Sequencer the obvious way: one process, one map.
func (r *refTable) Next(_ context.Context, k table.Key) (int64, error) {
	if err := k.Validate(); err != nil {
		return 0, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seq == nil {
		r.seq = map[table.Key]int64{}
	}
	n, ok := r.seq[k]
	if !ok {
		if c := r.cur(k); c != nil {
			n = c.Num
		}
	}
	n++
	r.seq[k] = n
	return n, nil
}

// wrote keeps Next's counter for k at least n.
func (r *refTable) wrote(k table.Key, n int64) {
	if v, ok := r.seq[k]; ok && n > v {
		r.seq[k] = n
	}
}

func clone(it table.Item) table.Item {
	it.Data = slices.Clone(it.Data)
	return it
}

func (r *refTable) cur(k table.Key) *table.Item {
	it, ok := r.items[k]
	if !ok || it.Expired(time.Now().Unix()) {
		return nil
	}
	return &it
}

func (r *refTable) Get(_ context.Context, k table.Key) (table.Item, error) {
	if err := k.Validate(); err != nil {
		return table.Item{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.cur(k); c != nil {
		return clone(*c), nil
	}
	return table.Item{}, table.ErrNotFound
}

func (r *refTable) GetMany(ctx context.Context, keys []table.Key) ([]table.Item, error) {
	var out []table.Item
	for _, k := range keys {
		if err := k.Validate(); err != nil {
			return nil, err
		}
	}
	for _, k := range keys {
		it, err := r.Get(ctx, k)
		if err == nil {
			out = append(out, it)
		}
	}
	return out, nil
}

func (r *refTable) Put(ctx context.Context, it table.Item, c table.Cond) error {
	return single(r.Transact(ctx, []table.Op{table.Put(it, c)}))
}

func (r *refTable) Delete(ctx context.Context, k table.Key, c table.Cond) error {
	return single(r.Transact(ctx, []table.Op{table.Delete(k, c)}))
}

func (r *refTable) Add(ctx context.Context, k table.Key, d int64) (int64, error) {
	if err := k.Validate(); err != nil {
		return 0, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.apply(table.Add(k, d, table.Cond{}))
	return r.items[k].Num, nil
}

func single(err error) error {
	var txe *table.TxError
	if errors.As(err, &txe) {
		return table.ErrConditionFailed
	}
	return err
}

func (r *refTable) Transact(_ context.Context, ops []table.Op) error {
	if err := table.ValidateTx(ops); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, op := range ops {
		if !op.Cond.Holds(r.cur(op.Target())) {
			return &table.TxError{Index: i}
		}
	}
	for _, op := range ops {
		r.apply(op)
	}
	return nil
}

func (r *refTable) apply(op table.Op) {
	k := op.Target()
	switch op.Kind {
	case table.OpPut:
		r.items[k] = clone(op.Item)
		r.wrote(k, op.Item.Num)
	case table.OpPutRaise:
		r.items[k] = clone(op.Item)
		r.wrote(k, op.Item.Num)
		c := r.cur(op.Key)
		switch {
		case c == nil:
			r.items[op.Key] = table.Item{PK: op.Key.PK, SK: op.Key.SK, Num: op.Delta}
		case c.Num < op.Delta:
			c.Num = op.Delta
			r.items[op.Key] = *c
		}
		r.wrote(op.Key, op.Delta)
	case table.OpDelete:
		delete(r.items, k)
	case table.OpAdd:
		c := r.cur(k)
		if c == nil {
			c = &table.Item{PK: k.PK, SK: k.SK}
		}
		if n, ok := r.seq[k]; ok && n > c.Num {
			c.Num = n
		}
		c.Num += op.Delta
		r.items[k] = *c
		r.wrote(k, c.Num)
	}
}

func (r *refTable) Query(_ context.Context, q table.Query) (table.Page, error) {
	if err := q.Validate(); err != nil {
		return table.Page{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	type row struct {
		sort string // the sort key, then a tie-breaker
		it   table.Item
	}
	var rows []row
	for _, it := range r.items {
		if it.Expired(time.Now().Unix()) {
			continue
		}
		pk, sk := it.PK, it.SK
		if q.Index != "" {
			pk, sk = it.GPK, it.GSK
		}
		if pk != q.PK || !strings.HasPrefix(sk, q.Prefix) ||
			(q.From != "" && sk < q.From) || (q.To != "" && sk > q.To) {
			continue
		}
		rows = append(rows, row{sk + "\x00" + it.PK + "\x00" + it.SK, clone(it)})
	}
	slices.SortFunc(rows, func(a, b row) int { return strings.Compare(a.sort, b.sort) })
	if q.Reverse {
		slices.Reverse(rows)
	}
	var p table.Page
	size := 0
	for _, rw := range rows {
		if q.Cursor != "" && (!q.Reverse && rw.sort <= q.Cursor || q.Reverse && rw.sort >= q.Cursor) {
			continue
		}
		s := table.ItemSize(rw.it)
		if (q.Limit > 0 && len(p.Items) == q.Limit) || size+s > table.MaxPageBytes {
			last := p.Items[len(p.Items)-1]
			lk := last.SK
			if q.Index != "" {
				lk = last.GSK
			}
			p.Next = lk + "\x00" + last.PK + "\x00" + last.SK
			break
		}
		size += s
		p.Items = append(p.Items, rw.it)
	}
	return p, nil
}
