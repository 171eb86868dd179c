// Package dynamo implements the storage port table.Table on Amazon DynamoDB.
//
// Items are stored with the attribute names of the table package (pk, sk, gpk,
// gsk, d, n, v, ttl); absent values are omitted, so an item with no GPK stays
// out of the secondary index. Every request is checked with the port's own
// validation before it is sent, so invalid requests fail the same way as on
// the embedded engine. DynamoDB deletes expired items late, so expired items
// are filtered out of every read and count as missing in every condition.
//
// Every call asks for ReturnConsumedCapacity=TOTAL and is counted in the
// table's Counters (see Table.Stats), which benchmarks use to report calls and
// capacity units per operation.
package dynamo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// Table is a table.Table backed by one DynamoDB table.
type Table struct {
	client  *dynamodb.Client
	name    string
	stats   *Counters
	now     func() time.Time
	retries int
	backoff time.Duration
}

var _ table.Table = (*Table)(nil)

// Option configures a Table.
type Option func(*Table)

// WithCounters makes the table count its calls in c, which may be shared
// between tables. By default each table has its own Counters.
func WithCounters(c *Counters) Option { return func(t *Table) { t.stats = c } }

// WithClock sets the clock that decides which items have expired (default time.Now).
func WithClock(now func() time.Time) Option { return func(t *Table) { t.now = now } }

// WithRetries sets how many times a request that hit a transaction conflict
// (or an expired item that had to be cleared first) is retried before giving
// up with table.ErrConflict, and the base of the jittered exponential backoff
// between tries. The defaults are 6 retries and 10ms.
func WithRetries(n int, base time.Duration) Option {
	return func(t *Table) { t.retries, t.backoff = n, base }
}

// New returns the adapter for the DynamoDB table tableName, which must have
// the key schema and index described by resources.Table (see EnsureTable).
func New(client *dynamodb.Client, tableName string, opts ...Option) *Table {
	t := &Table{client: client, name: tableName, now: time.Now, retries: 6, backoff: 10 * time.Millisecond}
	for _, o := range opts {
		o(t)
	}
	if t.stats == nil {
		t.stats = new(Counters)
	}
	return t
}

// Name returns the DynamoDB table name.
func (t *Table) Name() string { return t.name }

// Stats returns a snapshot of the calls and capacity counted so far.
func (t *Table) Stats() Stats { return t.stats.Snapshot() }

// Counters returns the counters the table records into.
func (t *Table) Counters() *Counters { return t.stats }

// Get returns the item at k, or table.ErrNotFound if it is missing or expired.
func (t *Table) Get(ctx context.Context, k table.Key) (table.Item, error) {
	if err := k.Validate(); err != nil {
		return table.Item{}, err
	}
	out, err := t.client.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:              &t.name,
		Key:                    keyAttrs(k),
		ConsistentRead:         aws.Bool(true),
		ReturnConsumedCapacity: types.ReturnConsumedCapacityTotal,
	})
	t.stats.record(OpGetItem, err, capOf(out, func(o *dynamodb.GetItemOutput) *types.ConsumedCapacity { return o.ConsumedCapacity })...)
	if err != nil {
		return table.Item{}, mapErr(err)
	}
	if out.Item == nil {
		return table.Item{}, table.ErrNotFound
	}
	it, err := unmarshal(out.Item)
	if err != nil {
		return table.Item{}, err
	}
	if it.Expired(t.now().Unix()) {
		return table.Item{}, table.ErrNotFound
	}
	return it, nil
}

// GetMany reads the keys with BatchGetItem, table.MaxBatchGet at a time, and
// returns the unexpired items found in the order of keys (a key given twice
// yields its item twice).
func (t *Table) GetMany(ctx context.Context, keys []table.Key) ([]table.Item, error) {
	return t.getMany(ctx, keys, true)
}

// GetManyEventual is GetMany with eventually consistent reads (half the
// read units; table.EventualReader).
func (t *Table) GetManyEventual(ctx context.Context, keys []table.Key) ([]table.Item, error) {
	return t.getMany(ctx, keys, false)
}

func (t *Table) getMany(ctx context.Context, keys []table.Key, consistent bool) ([]table.Item, error) {
	for _, k := range keys {
		if err := k.Validate(); err != nil {
			return nil, err
		}
	}
	// BatchGetItem rejects duplicate keys, so ask for each key once.
	uniq := make([]table.Key, 0, len(keys))
	seen := make(map[table.Key]struct{}, len(keys))
	for _, k := range keys {
		if _, ok := seen[k]; !ok {
			seen[k] = struct{}{}
			uniq = append(uniq, k)
		}
	}
	found := make(map[table.Key]table.Item, len(uniq))
	now := t.now().Unix()
	for start := 0; start < len(uniq); start += table.MaxBatchGet {
		chunk := uniq[start:min(start+table.MaxBatchGet, len(uniq))]
		pending := make([]map[string]types.AttributeValue, len(chunk))
		for i, k := range chunk {
			pending[i] = keyAttrs(k)
		}
		stalls := 0
		for len(pending) > 0 {
			out, err := t.client.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{
				RequestItems: map[string]types.KeysAndAttributes{
					t.name: {Keys: pending, ConsistentRead: aws.Bool(consistent)},
				},
				ReturnConsumedCapacity: types.ReturnConsumedCapacityTotal,
			})
			var caps []types.ConsumedCapacity
			if out != nil {
				caps = out.ConsumedCapacity
			}
			t.stats.record(OpBatchGetItem, err, caps...)
			if err != nil {
				return nil, mapErr(err)
			}
			for _, av := range out.Responses[t.name] {
				it, err := unmarshal(av)
				if err != nil {
					return nil, err
				}
				if !it.Expired(now) {
					found[it.Key()] = it
				}
			}
			left := out.UnprocessedKeys[t.name].Keys
			if len(left) > 0 {
				// DynamoDB returns unprocessed keys when throttled or when the
				// response hit its size cap; back off only when nothing moved.
				if len(left) == len(pending) {
					stalls++
					if stalls > 10 {
						return nil, fmt.Errorf("dynamo: BatchGetItem made no progress on %d keys", len(left))
					}
					if err := t.sleep(ctx, stalls); err != nil {
						return nil, err
					}
				} else {
					stalls = 0
				}
			}
			pending = left
		}
	}
	items := make([]table.Item, 0, len(found))
	given := make(map[table.Key]bool, len(found))
	for _, k := range keys {
		if it, ok := found[k]; ok {
			if given[k] { // a repeated key gets its own copy of the data
				it.Data = slices.Clone(it.Data)
			}
			given[k] = true
			items = append(items, it)
		}
	}
	return items, nil
}

// Put writes the item if c holds.
func (t *Table) Put(ctx context.Context, it table.Item, c table.Cond) error {
	if err := it.Validate(); err != nil {
		return err
	}
	return t.retryConflicts(ctx, func() error {
		e := newExpr()
		cond := e.cond(c, t.now().Unix())
		out, err := t.client.PutItem(ctx, &dynamodb.PutItemInput{
			TableName:                 &t.name,
			Item:                      marshal(it),
			ConditionExpression:       cond,
			ExpressionAttributeNames:  e.namesOrNil(),
			ExpressionAttributeValues: e.valuesOrNil(),
			ReturnConsumedCapacity:    types.ReturnConsumedCapacityTotal,
		})
		t.stats.record(OpPutItem, err, capOf(out, func(o *dynamodb.PutItemOutput) *types.ConsumedCapacity { return o.ConsumedCapacity })...)
		return err
	})
}

// Delete removes the item at k if c holds.
func (t *Table) Delete(ctx context.Context, k table.Key, c table.Cond) error {
	if err := k.Validate(); err != nil {
		return err
	}
	return t.retryConflicts(ctx, func() error {
		e := newExpr()
		cond := e.cond(c, t.now().Unix())
		return t.deleteItem(ctx, k, cond, e)
	})
}

func (t *Table) deleteItem(ctx context.Context, k table.Key, cond *string, e *expr) error {
	out, err := t.client.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName:                 &t.name,
		Key:                       keyAttrs(k),
		ConditionExpression:       cond,
		ExpressionAttributeNames:  e.namesOrNil(),
		ExpressionAttributeValues: e.valuesOrNil(),
		ReturnConsumedCapacity:    types.ReturnConsumedCapacityTotal,
	})
	t.stats.record(OpDeleteItem, err, capOf(out, func(o *dynamodb.DeleteItemOutput) *types.ConsumedCapacity { return o.ConsumedCapacity })...)
	return err
}

// clearExpired deletes the item at k if it has expired, so that a following
// update starts from nothing as the port requires. It reports whether it
// deleted anything.
func (t *Table) clearExpired(ctx context.Context, k table.Key) (bool, error) {
	e := newExpr()
	cond := e.expired(t.now().Unix())
	err := t.deleteItem(ctx, k, &cond, e)
	if err == nil {
		return true, nil
	}
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return false, nil
	}
	return false, mapErr(err)
}

// Add adds delta to the item's Num with UpdateItem ADD, creating the item if
// it is missing. An expired item is deleted first, so the result starts from
// zero with no other attributes, as if DynamoDB had already removed it.
func (t *Table) Add(ctx context.Context, k table.Key, delta int64) (int64, error) {
	if err := k.Validate(); err != nil {
		return 0, err
	}
	for attempt := 0; ; attempt++ {
		e := newExpr()
		cond := e.notExpired(t.now().Unix())
		upd := "ADD " + e.name(table.AttrNum) + " " + e.value(num(delta))
		out, err := t.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName:                 &t.name,
			Key:                       keyAttrs(k),
			UpdateExpression:          &upd,
			ConditionExpression:       &cond,
			ExpressionAttributeNames:  e.names,
			ExpressionAttributeValues: e.values,
			ReturnValues:              types.ReturnValueUpdatedNew,
			ReturnConsumedCapacity:    types.ReturnConsumedCapacityTotal,
		})
		t.stats.record(OpUpdateItem, err, capOf(out, func(o *dynamodb.UpdateItemOutput) *types.ConsumedCapacity { return o.ConsumedCapacity })...)
		if err == nil {
			n, ok := out.Attributes[table.AttrNum].(*types.AttributeValueMemberN)
			if !ok {
				return 0, fmt.Errorf("dynamo: UpdateItem returned no %q", table.AttrNum)
			}
			return strconv.ParseInt(n.Value, 10, 64)
		}
		var ccf *types.ConditionalCheckFailedException
		switch {
		case (errors.As(err, &ccf) || isConflict(err)) && attempt >= t.retries:
			return 0, fmt.Errorf("%w: add to %s: %v", table.ErrConflict, k, err)
		case errors.As(err, &ccf):
			// The item has expired: clear it and add again.
			if _, err := t.clearExpired(ctx, k); err != nil {
				return 0, err
			}
		case isConflict(err):
			if err := t.sleep(ctx, attempt+1); err != nil {
				return 0, err
			}
		default:
			return 0, mapErr(err)
		}
	}
}

// Transact applies ops with one TransactWriteItems call. A failed condition
// becomes a *table.TxError naming the first failed operation; transaction
// conflicts are retried and end in table.ErrConflict.
func (t *Table) Transact(ctx context.Context, ops []table.Op) error {
	if err := table.ValidateTx(ops); err != nil {
		return err
	}
	for i, op := range ops {
		if op.Kind == table.OpPutRaise { // only for engines one process owns (table.Sequencer)
			return fmt.Errorf("%w: op %d: DynamoDB does not implement table.Sequencer's PutRaise", table.ErrInvalid, i)
		}
	}
	for attempt := 0; ; attempt++ {
		in := t.txInput(ops, t.now().Unix())
		out, err := t.client.TransactWriteItems(ctx, in)
		var caps []types.ConsumedCapacity
		if out != nil {
			caps = out.ConsumedCapacity
		}
		t.stats.record(OpTransactWriteItems, err, caps...)
		if err == nil {
			return nil
		}
		var tce *types.TransactionCanceledException
		if !errors.As(err, &tce) {
			if isConflict(err) && attempt < t.retries {
				if err := t.sleep(ctx, attempt+1); err != nil {
					return err
				}
				continue
			}
			return mapErr(err)
		}
		failed, conflict, other := cancelReasons(tce)
		if failed >= 0 {
			op := ops[failed]
			// An add on an expired item fails its not-expired guard; clear the
			// item and run the transaction again. If nothing was expired the
			// failure was the caller's condition (or a race for a guard-only add).
			if op.Kind == table.OpAdd && (op.Cond.Kind == table.CondNone || op.Cond.Kind == table.CondNotExists) {
				cleared, err := t.clearExpired(ctx, op.Key)
				if err != nil {
					return err
				}
				if cleared || op.Cond.Kind == table.CondNone {
					if attempt >= t.retries {
						return fmt.Errorf("%w: add to %s kept meeting expired items", table.ErrConflict, op.Key)
					}
					continue
				}
			}
			return &table.TxError{Index: failed}
		}
		if conflict {
			if attempt < t.retries {
				if err := t.sleep(ctx, attempt+1); err != nil {
					return err
				}
				continue
			}
			return fmt.Errorf("%w: %v", table.ErrConflict, err)
		}
		if other != "" && strings.Contains(strings.ToLower(other), "size") {
			return fmt.Errorf("%w: %v", table.ErrTooLarge, err)
		}
		return mapErr(err)
	}
}

func (t *Table) txInput(ops []table.Op, now int64) *dynamodb.TransactWriteItemsInput {
	items := make([]types.TransactWriteItem, len(ops))
	for i, op := range ops {
		e := newExpr()
		switch op.Kind {
		case table.OpPut:
			items[i].Put = &types.Put{
				TableName:                 &t.name,
				Item:                      marshal(op.Item),
				ConditionExpression:       e.cond(op.Cond, now),
				ExpressionAttributeNames:  e.namesOrNil(),
				ExpressionAttributeValues: e.valuesOrNil(),
			}
		case table.OpDelete:
			items[i].Delete = &types.Delete{
				TableName:                 &t.name,
				Key:                       keyAttrs(op.Key),
				ConditionExpression:       e.cond(op.Cond, now),
				ExpressionAttributeNames:  e.namesOrNil(),
				ExpressionAttributeValues: e.valuesOrNil(),
			}
		case table.OpCheck:
			items[i].ConditionCheck = &types.ConditionCheck{
				TableName:                 &t.name,
				Key:                       keyAttrs(op.Key),
				ConditionExpression:       e.cond(op.Cond, now),
				ExpressionAttributeNames:  e.namesOrNil(),
				ExpressionAttributeValues: e.valuesOrNil(),
			}
		case table.OpAdd:
			// ADD must not count from an expired item's Num, so every add
			// also requires the item not to have expired (Transact clears
			// expired items and retries when this guard fails).
			var cond string
			switch op.Cond.Kind {
			case table.CondNone:
				cond = e.notExpired(now)
			case table.CondNotExists:
				cond = "attribute_not_exists(" + e.name(table.AttrPK) + ")"
			default:
				cond = *e.cond(op.Cond, now)
			}
			upd := "ADD " + e.name(table.AttrNum) + " " + e.value(num(op.Delta))
			items[i].Update = &types.Update{
				TableName:                 &t.name,
				Key:                       keyAttrs(op.Key),
				UpdateExpression:          &upd,
				ConditionExpression:       &cond,
				ExpressionAttributeNames:  e.names,
				ExpressionAttributeValues: e.values,
			}
		}
	}
	return &dynamodb.TransactWriteItemsInput{
		TransactItems:          items,
		ClientRequestToken:     aws.String(token()),
		ReturnConsumedCapacity: types.ReturnConsumedCapacityTotal,
	}
}

// cancelReasons reads a cancelled transaction's reasons: the index of the
// first failed condition (or -1), whether any operation conflicted with
// another transaction, and the first other reason's message.
func cancelReasons(e *types.TransactionCanceledException) (failed int, conflict bool, other string) {
	failed = -1
	for i, r := range e.CancellationReasons {
		code := aws.ToString(r.Code)
		switch code {
		case "", "None":
		case "ConditionalCheckFailed":
			if failed < 0 {
				failed = i
			}
		case "TransactionConflict":
			conflict = true
		default:
			if other == "" {
				other = code + ": " + aws.ToString(r.Message)
			}
		}
	}
	return failed, conflict, other
}

// Query returns one page of q. With a Limit it asks DynamoDB for one item
// more than the limit, so that Next is empty exactly when nothing follows.
func (t *Table) Query(ctx context.Context, q table.Query) (table.Page, error) {
	if err := q.Validate(); err != nil {
		return table.Page{}, err
	}
	index := q.Index != ""
	pkAttr, skAttr := table.AttrPK, table.AttrSK
	if index {
		pkAttr, skAttr = table.AttrGPK, table.AttrGSK
	}
	e := newExpr()
	kc := e.name(pkAttr) + " = " + e.value(str(q.PK))
	switch {
	case q.Prefix != "":
		kc += " AND begins_with(" + e.name(skAttr) + ", " + e.value(str(q.Prefix)) + ")"
	case q.From != "" && q.To != "":
		kc += " AND " + e.name(skAttr) + " BETWEEN " + e.value(str(q.From)) + " AND " + e.value(str(q.To))
	case q.From != "":
		kc += " AND " + e.name(skAttr) + " >= " + e.value(str(q.From))
	case q.To != "":
		kc += " AND " + e.name(skAttr) + " <= " + e.value(str(q.To))
	}
	in := &dynamodb.QueryInput{
		TableName:                 &t.name,
		KeyConditionExpression:    &kc,
		ExpressionAttributeNames:  e.names,
		ExpressionAttributeValues: e.values,
		ScanIndexForward:          aws.Bool(!q.Reverse),
		ReturnConsumedCapacity:    types.ReturnConsumedCapacityTotal,
	}
	if index {
		in.IndexName = aws.String(table.IndexName)
	} else {
		in.ConsistentRead = aws.Bool(true)
	}
	if q.Limit > 0 {
		in.Limit = aws.Int32(int32(min(q.Limit, 1<<30) + 1))
	}
	if q.Cursor != "" {
		start, err := decodeCursor(q.Cursor, q.PK, index)
		if err != nil {
			return table.Page{}, err
		}
		in.ExclusiveStartKey = start
	}
	out, err := t.client.Query(ctx, in)
	t.stats.record(OpQuery, err, capOf(out, func(o *dynamodb.QueryOutput) *types.ConsumedCapacity { return o.ConsumedCapacity })...)
	if err != nil {
		return table.Page{}, mapErr(err)
	}
	raw, last := out.Items, out.LastEvaluatedKey
	if q.Limit > 0 && len(raw) > q.Limit {
		raw = raw[:q.Limit]
		last = raw[len(raw)-1]
	}
	now := t.now().Unix()
	page := table.Page{Items: make([]table.Item, 0, len(raw))}
	for _, av := range raw {
		it, err := unmarshal(av)
		if err != nil {
			return table.Page{}, err
		}
		if it.Expired(now) {
			continue
		}
		// begins_with is exact on DynamoDB, but some emulators match it
		// case-insensitively; checking again costs nothing.
		if sk := it.SK; q.Prefix != "" {
			if index {
				sk = it.GSK
			}
			if !strings.HasPrefix(sk, q.Prefix) {
				continue
			}
		}
		page.Items = append(page.Items, it)
	}
	if len(last) > 0 {
		page.Next, err = encodeCursor(last, index)
		if err != nil {
			return table.Page{}, err
		}
	}
	return page, nil
}

// retryConflicts runs a single-item write, retrying while it collides with a
// transaction in progress, and maps its error.
func (t *Table) retryConflicts(ctx context.Context, write func() error) error {
	for attempt := 0; ; attempt++ {
		err := write()
		if err == nil {
			return nil
		}
		if !isConflict(err) {
			return mapErr(err)
		}
		if attempt >= t.retries {
			return fmt.Errorf("%w: %v", table.ErrConflict, err)
		}
		if err := t.sleep(ctx, attempt+1); err != nil {
			return err
		}
	}
}

// sleep waits a random time below backoff·2^(n-1) (capped at one second).
func (t *Table) sleep(ctx context.Context, n int) error {
	d := t.backoff << min(n-1, 16)
	if d > time.Second || d <= 0 {
		d = time.Second
	}
	d = d/2 + time.Duration(mrand.Int64N(int64(d/2)+1))
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

func isConflict(err error) bool {
	var tc *types.TransactionConflictException
	return errors.As(err, &tc)
}

// mapErr turns DynamoDB's errors into the port's sentinels where one applies.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return table.ErrConditionFailed
	}
	if isConflict(err) {
		return fmt.Errorf("%w: %v", table.ErrConflict, err)
	}
	var api smithy.APIError
	if errors.As(err, &api) && api.ErrorCode() == "ValidationException" {
		if strings.Contains(strings.ToLower(api.ErrorMessage()), "size") {
			return fmt.Errorf("%w: %v", table.ErrTooLarge, err)
		}
		return fmt.Errorf("%w: %v", table.ErrInvalid, err)
	}
	return err
}

func capOf[O any](out *O, get func(*O) *types.ConsumedCapacity) []types.ConsumedCapacity {
	if out == nil {
		return nil
	}
	if c := get(out); c != nil {
		return []types.ConsumedCapacity{*c}
	}
	return nil
}

func token() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
