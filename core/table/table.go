// Package table is the storage port for structured data: one wide table of
// items addressed by a partition key and a sort key, with the operations
// DynamoDB offers and nothing more (get, conditional put/delete, atomic
// counters, transactions, range queries on the sort key, one secondary index).
//
// Every domain repository in core is written against this port once. Two
// engines implement it (infra/bolt for one process, infra/dynamo for AWS) and
// both must pass the contract suite in core/table/tabletest. The embedded engine
// enforces DynamoDB's limits (see ItemSize, MaxItemSize, MaxTxItems, MaxTxBytes,
// MaxPageBytes) so that nothing that works locally fails on AWS.
package table

import (
	"context"
	"errors"
	"fmt"
	"strconv"
)

// DynamoDB's limits, enforced by every engine.
const (
	MaxItemSize  = 400 * 1024      // bytes, as counted by ItemSize
	MaxTxItems   = 100             // operations in one Transact call
	MaxTxBytes   = 4 * 1024 * 1024 // sum of ItemSize over a transaction's puts
	MaxPageBytes = 1024 * 1024     // a Query page never holds more than this (but at least one item)
	MaxKeyBytes  = 1024            // partition key (2048 for DynamoDB; 1024 for sort keys); we use 1024 for both
	MaxBatchGet  = 100             // keys in one underlying BatchGetItem (engines chunk GetMany)
)

// IndexName is the name of the single global secondary index, keyed by
// Item.GPK and Item.GSK. Items with an empty GPK are not in the index.
const IndexName = "gsi1"

// Sentinel errors. Engines wrap or return these; callers test with errors.Is.
var (
	ErrNotFound        = errors.New("table: item not found")
	ErrConditionFailed = errors.New("table: condition failed")
	ErrTooLarge        = errors.New("table: over a size limit")
	ErrInvalid         = errors.New("table: invalid request")
	// ErrConflict means another transaction was touching the same items at the
	// same time (DynamoDB's TransactionConflict) and the engine's own retries ran
	// out. Nothing was written; the caller may retry.
	ErrConflict = errors.New("table: transaction conflict")
)

// Key addresses one item.
type Key struct {
	PK string
	SK string
}

func (k Key) String() string { return k.PK + "|" + k.SK }

// Item is one record. PK and SK are required and at most MaxKeyBytes each.
type Item struct {
	PK string
	SK string
	// GPK and GSK are the item's key in the secondary index (IndexName).
	// Leave GPK empty to keep the item out of the index. GSK may be empty
	// only when GPK is empty.
	GPK string
	GSK string
	// Data is the payload, opaque to the store (core stores JSON here).
	Data []byte
	// Num is a number that Add changes atomically (stream positions, counts).
	Num int64
	// Version is for optimistic concurrency: callers set it and guard writes
	// with IfVersion. The store never changes it by itself.
	Version int64
	// TTL is a Unix time in seconds after which the item is gone: Get, GetMany
	// and Query never return an expired item (DynamoDB deletes expired items
	// late, so engines filter on read). Zero means the item never expires.
	TTL int64
}

// Key returns the item's primary key.
func (it Item) Key() Key { return Key{PK: it.PK, SK: it.SK} }

// Expired reports whether the item's TTL has passed at Unix time now.
func (it Item) Expired(now int64) bool { return it.TTL != 0 && it.TTL <= now }

// Attribute names used by the engines; ItemSize counts them the way DynamoDB does.
const (
	AttrPK      = "pk"
	AttrSK      = "sk"
	AttrGPK     = "gpk"
	AttrGSK     = "gsk"
	AttrData    = "d"
	AttrNum     = "n"
	AttrVersion = "v"
	AttrTTL     = "ttl"
)

// ItemSize is the item's size as DynamoDB bills and limits it: for each
// attribute present, the length of its name plus the size of its value
// (strings and binary by length, numbers about one byte per two digits plus one).
func ItemSize(it Item) int {
	n := len(AttrPK) + len(it.PK) + len(AttrSK) + len(it.SK)
	if it.GPK != "" {
		n += len(AttrGPK) + len(it.GPK) + len(AttrGSK) + len(it.GSK)
	}
	if len(it.Data) > 0 {
		n += len(AttrData) + len(it.Data)
	}
	if it.Num != 0 {
		n += len(AttrNum) + numSize(it.Num)
	}
	if it.Version != 0 {
		n += len(AttrVersion) + numSize(it.Version)
	}
	if it.TTL != 0 {
		n += len(AttrTTL) + numSize(it.TTL)
	}
	return n
}

func numSize(v int64) int {
	digits := len(strconv.FormatInt(v, 10))
	if v < 0 {
		digits--
	}
	return (digits+1)/2 + 1
}

// Validate checks an item against the key rules and the item size limit.
func (it Item) Validate() error {
	if err := (Key{it.PK, it.SK}).Validate(); err != nil {
		return err
	}
	if it.GPK == "" && it.GSK != "" {
		return fmt.Errorf("%w: GSK without GPK", ErrInvalid)
	}
	if it.GPK != "" && it.GSK == "" {
		return fmt.Errorf("%w: GPK without GSK", ErrInvalid)
	}
	if len(it.GPK) > MaxKeyBytes || len(it.GSK) > MaxKeyBytes {
		return fmt.Errorf("%w: index key over %d bytes", ErrTooLarge, MaxKeyBytes)
	}
	if s := ItemSize(it); s > MaxItemSize {
		return fmt.Errorf("%w: item %s is %d bytes (max %d)", ErrTooLarge, it.Key(), s, MaxItemSize)
	}
	return nil
}

// Validate checks that both parts are present and within MaxKeyBytes.
func (k Key) Validate() error {
	if k.PK == "" || k.SK == "" {
		return fmt.Errorf("%w: empty key part in %q", ErrInvalid, k.String())
	}
	if len(k.PK) > MaxKeyBytes || len(k.SK) > MaxKeyBytes {
		return fmt.Errorf("%w: key over %d bytes", ErrTooLarge, MaxKeyBytes)
	}
	return nil
}

// CondKind selects what a Cond checks.
type CondKind uint8

// The conditions a write may carry.
const (
	CondNone      CondKind = iota // always true
	CondNotExists                 // no (unexpired) item has this key
	CondExists                    // an (unexpired) item has this key
	CondVersion                   // an item exists and its Version equals Cond.Version
)

// Cond is a condition on the current state of one item.
type Cond struct {
	Kind    CondKind
	Version int64
}

// IfNotExists, IfExists and IfVersion build the usual conditions.
func IfNotExists() Cond       { return Cond{Kind: CondNotExists} }
func IfExists() Cond          { return Cond{Kind: CondExists} }
func IfVersion(v int64) Cond  { return Cond{Kind: CondVersion, Version: v} }
func (c Cond) String() string { return fmt.Sprintf("cond(%d,%d)", c.Kind, c.Version) }
func (c Cond) IsNone() bool   { return c.Kind == CondNone }

// Holds reports whether the condition holds for the current item (nil when
// there is none, or it has expired). Engines that evaluate conditions
// themselves (the embedded one) use this so both engines agree exactly.
func (c Cond) Holds(cur *Item) bool {
	switch c.Kind {
	case CondNone:
		return true
	case CondNotExists:
		return cur == nil
	case CondExists:
		return cur != nil
	case CondVersion:
		return cur != nil && cur.Version == c.Version
	}
	return false
}

// OpKind is the kind of one transaction operation.
type OpKind uint8

// Transaction operations.
const (
	OpPut    OpKind = iota + 1 // write Item (replacing any item with its key)
	OpDelete                   // delete the item at Key
	OpCheck                    // only check Cond on the item at Key
	OpAdd                      // add Delta to the item's Num (creating it with Num=Delta)
	// OpPutRaise writes Item like OpPut (if Cond holds) and also raises the
	// Num of the counter item at Key to Delta if Delta is higher (creating
	// the counter with Num = Delta if it is missing or expired). Only engines
	// that implement Sequencer accept it; the others answer ErrInvalid. The
	// counter's key is not counted as touched: several PutRaise operations
	// of one transaction may raise the same counter.
	OpPutRaise
)

// Op is one operation of a transaction. For OpPut the key is Item's; for the
// others it is Key.
type Op struct {
	Kind  OpKind
	Item  Item
	Key   Key
	Delta int64
	Cond  Cond
}

// Put, Delete, Check and Add build transaction operations.
func Put(it Item, c Cond) Op            { return Op{Kind: OpPut, Item: it, Cond: c} }
func Delete(k Key, c Cond) Op           { return Op{Kind: OpDelete, Key: k, Cond: c} }
func Check(k Key, c Cond) Op            { return Op{Kind: OpCheck, Key: k, Cond: c} }
func Add(k Key, delta int64, c Cond) Op { return Op{Kind: OpAdd, Key: k, Delta: delta, Cond: c} }

// PutRaise builds an OpPutRaise: put it if c holds, and raise the Num of
// the counter at counter to at least n (engines implementing Sequencer only).
func PutRaise(it Item, c Cond, counter Key, n int64) Op {
	return Op{Kind: OpPutRaise, Item: it, Cond: c, Key: counter, Delta: n}
}

// Target returns the key the operation touches (for OpPutRaise, the item's;
// the raised counter is not a target).
func (o Op) Target() Key {
	if o.Kind == OpPut || o.Kind == OpPutRaise {
		return o.Item.Key()
	}
	return o.Key
}

// TxError reports which operation's condition failed in a cancelled
// transaction. errors.Is(err, ErrConditionFailed) is true for it.
type TxError struct {
	Index int // index of the first operation whose condition failed
}

func (e *TxError) Error() string {
	return fmt.Sprintf("table: transaction cancelled: condition of op %d failed", e.Index)
}

// Unwrap makes errors.Is(err, ErrConditionFailed) true.
func (e *TxError) Unwrap() error { return ErrConditionFailed }

// ValidateTx checks a transaction against DynamoDB's rules: 1..MaxTxItems
// operations, at most MaxTxBytes of items, no key touched twice, valid items.
func ValidateTx(ops []Op) error {
	if len(ops) == 0 || len(ops) > MaxTxItems {
		return fmt.Errorf("%w: transaction has %d operations (1..%d)", ErrInvalid, len(ops), MaxTxItems)
	}
	seen := make(map[Key]struct{}, len(ops))
	total := 0
	for i, op := range ops {
		k := op.Target()
		if err := k.Validate(); err != nil {
			return fmt.Errorf("op %d: %w", i, err)
		}
		if _, dup := seen[k]; dup {
			return fmt.Errorf("%w: transaction touches %s twice", ErrInvalid, k)
		}
		seen[k] = struct{}{}
		switch op.Kind {
		case OpPut:
			if err := op.Item.Validate(); err != nil {
				return fmt.Errorf("op %d: %w", i, err)
			}
			total += ItemSize(op.Item)
		case OpPutRaise:
			if err := op.Item.Validate(); err != nil {
				return fmt.Errorf("op %d: %w", i, err)
			}
			if err := op.Key.Validate(); err != nil {
				return fmt.Errorf("op %d: counter: %w", i, err)
			}
			if op.Key == k {
				return fmt.Errorf("%w: op %d raises the item it puts", ErrInvalid, i)
			}
			total += ItemSize(op.Item) + len(op.Key.PK) + len(op.Key.SK)
		case OpDelete, OpCheck, OpAdd:
			total += len(k.PK) + len(k.SK)
		default:
			return fmt.Errorf("%w: op %d has unknown kind %d", ErrInvalid, i, op.Kind)
		}
		if op.Kind == OpCheck && op.Cond.IsNone() {
			return fmt.Errorf("%w: op %d is a check without a condition", ErrInvalid, i)
		}
	}
	if total > MaxTxBytes {
		return fmt.Errorf("%w: transaction is %d bytes (max %d)", ErrTooLarge, total, MaxTxBytes)
	}
	return nil
}

// Query selects items of one partition, in sort-key order.
type Query struct {
	// Index is "" for the table itself or IndexName for the secondary index,
	// where PK, Prefix, From and To apply to GPK and GSK. Index queries are
	// eventually consistent on DynamoDB: never rely on reading your own write.
	Index string
	PK    string
	// At most one of Prefix and the range (From, To) may be set.
	// Prefix keeps sort keys that begin with it.
	Prefix string
	// From and To bound the sort key, both inclusive; "" leaves that end open.
	From, To string
	// Reverse returns items in descending sort-key order.
	Reverse bool
	// Limit caps the items in one page (0 = as many as fit in MaxPageBytes).
	Limit int
	// Cursor continues from a previous Page.Next of the same query.
	Cursor string
}

// Validate checks the query's shape.
func (q Query) Validate() error {
	if q.PK == "" {
		return fmt.Errorf("%w: query without partition key", ErrInvalid)
	}
	if q.Index != "" && q.Index != IndexName {
		return fmt.Errorf("%w: unknown index %q", ErrInvalid, q.Index)
	}
	if q.Prefix != "" && (q.From != "" || q.To != "") {
		return fmt.Errorf("%w: query with both prefix and range", ErrInvalid)
	}
	if q.From != "" && q.To != "" && q.From > q.To {
		return fmt.Errorf("%w: query range from %q > to %q", ErrInvalid, q.From, q.To)
	}
	if q.Limit < 0 {
		return fmt.Errorf("%w: negative limit", ErrInvalid)
	}
	return nil
}

// Page is one page of query results. Next is empty when the query is done;
// otherwise pass it as Query.Cursor to continue. A page may hold fewer than
// Limit items (even none) while Next is not empty.
type Page struct {
	Items []Item
	Next  string
}

// Table is the storage port. All reads of the table itself are strongly
// consistent; index queries may lag. Expired items are never returned.
type Table interface {
	// Get returns the item or ErrNotFound.
	Get(ctx context.Context, k Key) (Item, error)
	// GetMany returns the items that exist, in the order of keys.
	GetMany(ctx context.Context, keys []Key) ([]Item, error)
	// Put writes the item if c holds, else returns ErrConditionFailed.
	Put(ctx context.Context, it Item, c Cond) error
	// Delete removes the item if c holds, else returns ErrConditionFailed.
	// Deleting a missing item with no condition succeeds.
	Delete(ctx context.Context, k Key, c Cond) error
	// Add adds delta to the item's Num atomically, creating the item (with
	// Num = delta and no other attributes) if it does not exist or has
	// expired, and returns the new Num.
	Add(ctx context.Context, k Key, delta int64) (int64, error)
	// Transact applies all operations or none. If a condition fails it returns
	// a *TxError naming the operation.
	Transact(ctx context.Context, ops []Op) error
	// Query returns one page of a partition's items in sort-key order.
	Query(ctx context.Context, q Query) (Page, error)
}

// Sequencer is an optional capability of an engine whose table one process
// owns exclusively (infra/bolt, guarded by bbolt's file lock). Such an
// engine can hand out the numbers of a counter item from memory and make
// them durable in the transaction that uses them (OpPutRaise), instead of
// committing an Add per number. Engines shared by several processes
// (DynamoDB) must not implement it. Use SequencerOf to find it.
//
// Guarantees: for one counter, Next's numbers increase in the order it
// returns them and none is returned twice while the table is open; Add on
// such a counter counts on from the highest number handed out, so the two
// never collide. After a restart Next starts from the stored Num, so a
// number handed out but never made durable may come again: callers must
// raise the counter (OpPutRaise) in every transaction that stores
// something carrying the number, as core/stream's claims and voids do.
type Sequencer interface {
	// Next returns one more than the highest of: the numbers Next returned
	// for k before, and the Num stored in the item at k (read on first use
	// in this process, and kept in step with every later write). It writes
	// nothing.
	Next(ctx context.Context, k Key) (int64, error)
}

// Unwrapper is implemented by tables that wrap another one (counting,
// tracing), so that SequencerOf can find the engine's capabilities.
type Unwrapper interface {
	Unwrap() Table
}

// SequencerOf returns t's Sequencer, looking through wrappers, or false if
// its engine has none.
func SequencerOf(t Table) (Sequencer, bool) {
	for range 8 {
		if s, ok := t.(Sequencer); ok {
			return s, true
		}
		u, ok := t.(Unwrapper)
		if !ok {
			return nil, false
		}
		t = u.Unwrap()
	}
	return nil, false
}

// EventualReader is an optional capability of engines that can also read
// eventually consistently, at a lower price (DynamoDB: half the read units).
// Such a read may miss writes of roughly the last second; callers use it
// only where a stale answer is corrected by a later read (a waiting /sync
// polling for changes). Use GetManyEventual.
type EventualReader interface {
	GetManyEventual(ctx context.Context, keys []Key) ([]Item, error)
}

// GetManyEventual is t.GetMany, eventually consistent where t's engine
// offers it (EventualReader, looked up through wrappers), strongly
// consistent otherwise.
func GetManyEventual(ctx context.Context, t Table, keys []Key) ([]Item, error) {
	x := t
	for range 8 {
		if e, ok := x.(EventualReader); ok {
			return e.GetManyEventual(ctx, keys)
		}
		u, ok := x.(Unwrapper)
		if !ok {
			break
		}
		x = u.Unwrap()
	}
	return t.GetMany(ctx, keys)
}
