package dynamo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"

	"github.com/cirrus-matrix/cirrus/core/resources"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// rawItem reads an item's stored attributes, bypassing the adapter.
func rawItem(t *testing.T, c *dynamodb.Client, tb *Table, k table.Key) map[string]types.AttributeValue {
	t.Helper()
	out, err := c.GetItem(t.Context(), &dynamodb.GetItemInput{TableName: aws.String(tb.Name()), Key: keyAttrs(k), ConsistentRead: aws.Bool(true)})
	if err != nil {
		t.Fatalf("raw GetItem: %v", err)
	}
	return out.Item
}

func attrNames(m map[string]types.AttributeValue) []string {
	var names []string
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func TestStoredAttributes(t *testing.T) {
	tb, c := newTestTable(t)
	ctx := t.Context()
	full := table.Item{PK: "p", SK: "full", GPK: "g", GSK: "s", Data: []byte{0, 1, 2}, Num: -5, Version: 7, TTL: time.Now().Unix() + 3600}
	bare := table.Item{PK: "p", SK: "bare"}
	for _, it := range []table.Item{full, bare} {
		if err := tb.Put(ctx, it, table.Cond{}); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := attrNames(rawItem(t, c, tb, full.Key())), []string{"d", "gpk", "gsk", "n", "pk", "sk", "ttl", "v"}; !slices.Equal(got, want) {
		t.Errorf("full item attributes %v, want %v", got, want)
	}
	if got, want := attrNames(rawItem(t, c, tb, bare.Key())), []string{"pk", "sk"}; !slices.Equal(got, want) {
		t.Errorf("bare item attributes %v, want %v", got, want)
	}
	if _, ok := rawItem(t, c, tb, full.Key())["d"].(*types.AttributeValueMemberB); !ok {
		t.Errorf("data is not stored as binary")
	}
	got, err := tb.Get(ctx, full.Key())
	if err != nil || got.GPK != "g" || got.GSK != "s" || string(got.Data) != "\x00\x01\x02" || got.Num != -5 || got.Version != 7 || got.TTL != full.TTL {
		t.Errorf("Get = %+v, %v; want %+v", got, err, full)
	}
}

// putRaw stores an item whose TTL has passed, as DynamoDB keeps it until its
// sweeper runs.
func putExpired(t *testing.T, tb *Table, it table.Item) {
	t.Helper()
	it.TTL = time.Now().Unix() - 10
	if err := tb.Put(t.Context(), it, table.Cond{}); err != nil {
		t.Fatal(err)
	}
}

func TestExpiredCountsAsMissing(t *testing.T) {
	tb, c := newTestTable(t)
	ctx := t.Context()
	k := table.Key{PK: "p", SK: "x"}
	old := table.Item{PK: k.PK, SK: k.SK, GPK: "g", GSK: "1", Data: []byte("old"), Num: 40, Version: 3}

	putExpired(t, tb, old)
	if len(rawItem(t, c, tb, k)) == 0 {
		t.Fatal("expired item is not in the table; the test needs it there")
	}
	if _, err := tb.Get(ctx, k); !errors.Is(err, table.ErrNotFound) {
		t.Errorf("Get expired: %v, want ErrNotFound", err)
	}
	if items, err := tb.GetMany(ctx, []table.Key{k}); err != nil || len(items) != 0 {
		t.Errorf("GetMany expired = %v, %v", items, err)
	}
	if p, err := tb.Query(ctx, table.Query{PK: "p"}); err != nil || len(p.Items) != 0 {
		t.Errorf("Query expired = %+v, %v", p, err)
	}
	for _, c := range []table.Cond{table.IfExists(), table.IfVersion(3), table.IfVersion(0)} {
		if err := tb.Put(ctx, table.Item{PK: k.PK, SK: k.SK}, c); !errors.Is(err, table.ErrConditionFailed) {
			t.Errorf("Put %v over expired: %v, want ErrConditionFailed", c, err)
		}
		if err := tb.Delete(ctx, k, c); !errors.Is(err, table.ErrConditionFailed) {
			t.Errorf("Delete %v of expired: %v, want ErrConditionFailed", c, err)
		}
	}
	err := tb.Transact(ctx, []table.Op{table.Put(table.Item{PK: "p", SK: "other"}, table.Cond{}), table.Check(k, table.IfExists())})
	var txe *table.TxError
	if !errors.As(err, &txe) || txe.Index != 1 {
		t.Errorf("Transact check exists on expired: %v, want TxError{1}", err)
	}

	// Add starts from nothing: the expired Num and other attributes are gone.
	if n, err := tb.Add(ctx, k, 2); err != nil || n != 2 {
		t.Errorf("Add over expired = %d, %v; want 2", n, err)
	}
	if got := attrNames(rawItem(t, c, tb, k)); !slices.Equal(got, []string{"n", "pk", "sk"}) {
		t.Errorf("after Add over expired attributes are %v", got)
	}
	if n, err := tb.Add(ctx, k, 3); err != nil || n != 5 {
		t.Errorf("second Add = %d, %v; want 5", n, err)
	}

	// The same inside a transaction, with and without IfNotExists.
	for _, c := range []table.Cond{{}, table.IfNotExists()} {
		putExpired(t, tb, old)
		if err := tb.Transact(ctx, []table.Op{table.Add(k, 7, c)}); err != nil {
			t.Fatalf("Transact Add %v over expired: %v", c, err)
		}
		got, err := tb.Get(ctx, k)
		if err != nil || got.Num != 7 || got.Data != nil || got.Version != 0 || got.GPK != "" {
			t.Errorf("after Transact Add %v over expired: %+v, %v", c, got, err)
		}
	}
	// IfNotExists on a live item still fails.
	err = tb.Transact(ctx, []table.Op{table.Add(k, 1, table.IfNotExists())})
	if !errors.As(err, &txe) || txe.Index != 0 {
		t.Errorf("Transact Add IfNotExists on live item: %v, want TxError{0}", err)
	}

	putExpired(t, tb, old)
	if err := tb.Put(ctx, table.Item{PK: k.PK, SK: k.SK, Data: []byte("new")}, table.IfNotExists()); err != nil {
		t.Errorf("Put IfNotExists over expired: %v", err)
	}
	putExpired(t, tb, old)
	if err := tb.Transact(ctx, []table.Op{table.Put(table.Item{PK: k.PK, SK: k.SK}, table.IfNotExists())}); err != nil {
		t.Errorf("Transact Put IfNotExists over expired: %v", err)
	}
}

func TestClock(t *testing.T) {
	at := time.Unix(1_000_000, 0)
	tb, _ := newTestTable(t, WithClock(func() time.Time { return at }))
	ctx := t.Context()
	it := table.Item{PK: "p", SK: "s", TTL: 1_000_100}
	if err := tb.Put(ctx, it, table.IfNotExists()); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Get(ctx, it.Key()); err != nil {
		t.Fatalf("Get before TTL: %v", err)
	}
	at = time.Unix(1_000_100, 0) // TTL <= now: expired
	if _, err := tb.Get(ctx, it.Key()); !errors.Is(err, table.ErrNotFound) {
		t.Fatalf("Get at TTL: %v, want ErrNotFound", err)
	}
	if err := tb.Put(ctx, it, table.IfNotExists()); err != nil {
		t.Fatalf("Put IfNotExists at TTL: %v", err)
	}
}

func TestVersionZeroMeansNoVersion(t *testing.T) {
	tb, _ := newTestTable(t)
	ctx := t.Context()
	k := table.Key{PK: "p", SK: "v"}
	if err := tb.Put(ctx, table.Item{PK: k.PK, SK: k.SK}, table.IfVersion(0)); !errors.Is(err, table.ErrConditionFailed) {
		t.Errorf("IfVersion(0) on missing item: %v", err)
	}
	if err := tb.Put(ctx, table.Item{PK: k.PK, SK: k.SK}, table.Cond{}); err != nil {
		t.Fatal(err)
	}
	if err := tb.Put(ctx, table.Item{PK: k.PK, SK: k.SK, Version: 1}, table.IfVersion(0)); err != nil {
		t.Errorf("IfVersion(0) on unversioned item: %v", err)
	}
	if err := tb.Put(ctx, table.Item{PK: k.PK, SK: k.SK, Version: 2}, table.IfVersion(0)); !errors.Is(err, table.ErrConditionFailed) {
		t.Errorf("IfVersion(0) on version 1: %v", err)
	}
	if err := tb.Delete(ctx, k, table.IfVersion(1)); err != nil {
		t.Errorf("Delete IfVersion(1): %v", err)
	}
}

func TestGetManyChunksAndOrder(t *testing.T) {
	tb, _ := newTestTable(t)
	ctx := t.Context()
	var items []table.Item
	for i := range 230 {
		if i%3 == 0 {
			continue // leave gaps
		}
		it := table.Item{PK: fmt.Sprintf("p%d", i%4), SK: fmt.Sprintf("%03d", i), Data: []byte(fmt.Sprint(i))}
		items = append(items, it)
		if err := tb.Put(ctx, it, table.Cond{}); err != nil {
			t.Fatal(err)
		}
	}
	var keys []table.Key
	var want []string
	for i := 229; i >= 0; i-- { // reverse order, plus a duplicate
		k := table.Key{PK: fmt.Sprintf("p%d", i%4), SK: fmt.Sprintf("%03d", i)}
		keys = append(keys, k)
		if i%3 != 0 {
			want = append(want, k.String())
		}
	}
	keys = append(keys, keys[0])
	want = append(want, keys[0].String())

	before := tb.Stats()
	got, err := tb.GetMany(ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	var gotKeys []string
	for _, it := range got {
		gotKeys = append(gotKeys, it.Key().String())
	}
	if !slices.Equal(gotKeys, want) {
		t.Errorf("GetMany order:\n got %v\nwant %v", gotKeys, want)
	}
	// 230 distinct keys need three BatchGetItem calls.
	if calls := tb.Stats().Sub(before).Op(OpBatchGetItem).Calls; calls != 3 {
		t.Errorf("GetMany made %d BatchGetItem calls, want 3", calls)
	}
	if got, err := tb.GetMany(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("GetMany(nil) = %v, %v", got, err)
	}
	if _, err := tb.GetMany(ctx, []table.Key{{PK: "p"}}); !errors.Is(err, table.ErrInvalid) {
		t.Errorf("GetMany with empty SK: %v", err)
	}
}

func TestQueryPaging(t *testing.T) {
	tb, _ := newTestTable(t)
	ctx := t.Context()
	for i := range 10 {
		it := table.Item{PK: "p", SK: fmt.Sprintf("s%02d", i), GPK: "g", GSK: fmt.Sprintf("x%d", i%3)}
		if err := tb.Put(ctx, it, table.Cond{}); err != nil {
			t.Fatal(err)
		}
	}
	// Exactly Limit items left: the page says there is nothing more.
	p, err := tb.Query(ctx, table.Query{PK: "p", From: "s05", Limit: 5})
	if err != nil || len(p.Items) != 5 || p.Next != "" {
		t.Errorf("Query last full page = %d items, next %q, %v; want 5 items, no next", len(p.Items), p.Next, err)
	}
	// Reverse pages of 4 over the index.
	q := table.Query{Index: table.IndexName, PK: "g", Reverse: true, Limit: 4}
	var got []string
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("too many pages")
		}
		p, err := tb.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range p.Items {
			got = append(got, it.GSK+"@"+it.SK)
		}
		if p.Next == "" {
			break
		}
		q.Cursor = p.Next
	}
	want := []string{"x2@s08", "x2@s05", "x2@s02", "x1@s07", "x1@s04", "x1@s01", "x0@s09", "x0@s06", "x0@s03", "x0@s00"}
	if !slices.Equal(got, want) {
		t.Errorf("index pages:\n got %v\nwant %v", got, want)
	}

	// A cursor only continues a query of its own partition.
	p, err = tb.Query(ctx, table.Query{PK: "p", Limit: 2})
	if err != nil || p.Next == "" {
		t.Fatalf("Query = %+v, %v", p, err)
	}
	for _, q := range []table.Query{
		{PK: "other", Cursor: p.Next},
		{Index: table.IndexName, PK: "p", Cursor: p.Next},
		{PK: "p", Cursor: "not a cursor"},
	} {
		if _, err := tb.Query(ctx, q); !errors.Is(err, table.ErrInvalid) {
			t.Errorf("Query %+v: %v, want ErrInvalid", q, err)
		}
	}
}

func TestStats(t *testing.T) {
	shared := new(Counters)
	tb, _ := newTestTable(t, WithCounters(shared))
	if tb.Counters() != shared {
		t.Fatal("WithCounters not used")
	}
	ctx := t.Context()
	start := tb.Stats()
	it := table.Item{PK: "p", SK: "s", Data: []byte("x")}
	if err := tb.Put(ctx, it, table.IfNotExists()); err != nil {
		t.Fatal(err)
	}
	if err := tb.Put(ctx, it, table.IfNotExists()); !errors.Is(err, table.ErrConditionFailed) {
		t.Fatal(err)
	}
	if _, err := tb.Get(ctx, it.Key()); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Add(ctx, it.Key(), 1); err != nil {
		t.Fatal(err)
	}
	if err := tb.Transact(ctx, []table.Op{table.Delete(it.Key(), table.IfExists())}); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Query(ctx, table.Query{PK: "p"}); err != nil {
		t.Fatal(err)
	}
	// Requests that fail validation never reach DynamoDB.
	if err := tb.Put(ctx, table.Item{PK: "p"}, table.Cond{}); !errors.Is(err, table.ErrInvalid) {
		t.Fatal(err)
	}
	d := tb.Stats().Sub(start)
	want := map[Operation]OpStats{
		OpPutItem:            {Calls: 2, Errors: 1},
		OpGetItem:            {Calls: 1},
		OpUpdateItem:         {Calls: 1},
		OpTransactWriteItems: {Calls: 1},
		OpQuery:              {Calls: 1},
	}
	for _, op := range Operations() {
		g := d.Op(op)
		if w := want[op]; g.Calls != w.Calls || g.Errors != w.Errors {
			t.Errorf("%v: calls %d errors %d, want %d %d", op, g.Calls, g.Errors, w.Calls, w.Errors)
		}
	}
	if tot := d.Total(); tot.Calls != 6 || tot.Errors != 1 {
		t.Errorf("total %+v", tot)
	}
	// The stand-in reports capacity like DynamoDB: reads in RCU, writes in WCU.
	if d.Op(OpGetItem).RCU <= 0 || d.Op(OpGetItem).WCU != 0 {
		t.Errorf("GetItem capacity %+v", d.Op(OpGetItem))
	}
	if d.Op(OpPutItem).WCU <= 0 || d.Op(OpPutItem).RCU != 0 {
		t.Errorf("PutItem capacity %+v", d.Op(OpPutItem))
	}
	if d.Op(OpTransactWriteItems).WCU <= 0 {
		t.Errorf("TransactWriteItems capacity %+v", d.Op(OpTransactWriteItems))
	}
	if s := d.String(); !strings.Contains(s, "PutItem=2(") || !strings.Contains(s, "total calls=6") {
		t.Errorf("String() = %q", s)
	}
	t.Log(d)

	// Concurrent use, then Reset.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 5 {
				if _, err := tb.Add(ctx, table.Key{PK: "c", SK: fmt.Sprint(i, j)}, 1); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if got := tb.Stats().Sub(start).Op(OpUpdateItem).Calls; got != 41 {
		t.Errorf("UpdateItem calls after concurrent adds: %d, want 41", got)
	}
	shared.Reset()
	if tot := tb.Stats().Total(); tot != (OpStats{}) {
		t.Errorf("after Reset: %+v", tot)
	}
}

func TestStatsArithmetic(t *testing.T) {
	var c Counters
	cu := func(f float64) *float64 { return &f }
	c.record(OpQuery, nil, types.ConsumedCapacity{CapacityUnits: cu(1.5)})
	c.record(OpPutItem, errors.New("x"), types.ConsumedCapacity{CapacityUnits: cu(2)})
	c.record(OpTransactWriteItems, nil, types.ConsumedCapacity{CapacityUnits: cu(4), WriteCapacityUnits: cu(4)}, types.ConsumedCapacity{CapacityUnits: cu(2), WriteCapacityUnits: cu(2)})
	a := c.Snapshot()
	c.record(OpQuery, nil, types.ConsumedCapacity{CapacityUnits: cu(0.5)})
	b := c.Snapshot()
	if got := b.Sub(a); got.Op(OpQuery) != (OpStats{Calls: 1, RCU: 0.5}) || got.Total().Calls != 1 {
		t.Errorf("Sub = %+v", got)
	}
	if got := b.Total(); got != (OpStats{Calls: 4, Errors: 1, RCU: 2, WCU: 8}) {
		t.Errorf("Total = %+v", got)
	}
	if got := a.Add(b.Sub(a)); got != b {
		t.Errorf("Add(Sub) = %+v, want %+v", got, b)
	}
}

// apiErr is a stand-in for the SDK's generic error for an unmodelled code.
type apiErr struct{ code, msg string }

func (e apiErr) Error() string                 { return e.code + ": " + e.msg }
func (e apiErr) ErrorCode() string             { return e.code }
func (e apiErr) ErrorMessage() string          { return e.msg }
func (e apiErr) ErrorFault() smithy.ErrorFault { return smithy.FaultClient }

func TestErrorMapping(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("operation error: %w", err) }
	cases := []struct {
		err  error
		want error
	}{
		{wrap(&types.ConditionalCheckFailedException{}), table.ErrConditionFailed},
		{wrap(&types.TransactionConflictException{}), table.ErrConflict},
		{wrap(apiErr{"ValidationException", "Item size has exceeded the maximum allowed size"}), table.ErrTooLarge},
		{wrap(apiErr{"ValidationException", "One or more parameter values were invalid"}), table.ErrInvalid},
	}
	for _, c := range cases {
		if got := mapErr(c.err); !errors.Is(got, c.want) {
			t.Errorf("mapErr(%v) = %v, want %v", c.err, got, c.want)
		}
	}
	reason := func(code string) types.CancellationReason { return types.CancellationReason{Code: aws.String(code)} }
	tce := &types.TransactionCanceledException{CancellationReasons: []types.CancellationReason{
		reason("None"), reason("TransactionConflict"), reason("ConditionalCheckFailed"), reason("ConditionalCheckFailed"),
	}}
	if f, c, o := cancelReasons(tce); f != 2 || !c || o != "" {
		t.Errorf("cancelReasons = %d %v %q", f, c, o)
	}
	tce = &types.TransactionCanceledException{CancellationReasons: []types.CancellationReason{reason("None"), reason("ValidationError")}}
	if f, c, o := cancelReasons(tce); f != -1 || c || !strings.HasPrefix(o, "ValidationError") {
		t.Errorf("cancelReasons = %d %v %q", f, c, o)
	}
}

func TestEnsureTable(t *testing.T) {
	tb, c := newTestTable(t)
	ctx := t.Context()
	// A second call on the existing table is a no-op.
	if err := EnsureTable(ctx, c, tb.Name(), resources.Table); err != nil {
		t.Fatalf("EnsureTable again: %v", err)
	}
	spec := resources.Table
	spec.IndexSK = "other"
	if err := EnsureTable(ctx, c, tb.Name(), spec); err == nil {
		t.Error("EnsureTable accepted a table with another index key")
	}
	d, err := c.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(tb.Name())})
	if err != nil {
		t.Fatal(err)
	}
	if d.Table.BillingModeSummary == nil || d.Table.BillingModeSummary.BillingMode != types.BillingModePayPerRequest {
		t.Errorf("billing mode %+v", d.Table.BillingModeSummary)
	}
	if len(d.Table.GlobalSecondaryIndexes) != 1 || d.Table.GlobalSecondaryIndexes[0].Projection.ProjectionType != types.ProjectionTypeAll {
		t.Errorf("indexes %+v", d.Table.GlobalSecondaryIndexes)
	}
	ttl, err := c.DescribeTimeToLive(ctx, &dynamodb.DescribeTimeToLiveInput{TableName: aws.String(tb.Name())})
	if err != nil {
		t.Logf("DescribeTimeToLive unsupported: %v", err)
	} else if d := ttl.TimeToLiveDescription; d == nil || aws.ToString(d.AttributeName) != table.AttrTTL {
		t.Errorf("TTL %+v", d)
	}
}

var _ = context.Background
