package dynamo

import (
	"fmt"
	"math"
	"strings"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Operation names one DynamoDB API call the adapter makes.
type Operation int

// The DynamoDB calls the adapter makes, as counted in Stats.
const (
	OpGetItem Operation = iota
	OpBatchGetItem
	OpPutItem
	OpDeleteItem
	OpUpdateItem
	OpTransactWriteItems
	OpQuery
	numOps
)

var opNames = [numOps]string{
	"GetItem", "BatchGetItem", "PutItem", "DeleteItem", "UpdateItem", "TransactWriteItems", "Query",
}

func (o Operation) String() string {
	if o >= 0 && o < numOps {
		return opNames[o]
	}
	return fmt.Sprintf("Operation(%d)", int(o))
}

// Operations lists every Operation, in a fixed order.
func Operations() []Operation {
	ops := make([]Operation, numOps)
	for i := range ops {
		ops[i] = Operation(i)
	}
	return ops
}

// OpStats are the counts for one Operation.
type OpStats struct {
	Calls  int64   // requests sent (each retry counts)
	Errors int64   // requests that returned an error, condition failures included
	RCU    float64 // read capacity units DynamoDB reported as consumed
	WCU    float64 // write capacity units DynamoDB reported as consumed
}

func (s OpStats) add(o OpStats, sign float64) OpStats {
	k := int64(sign)
	return OpStats{
		Calls:  s.Calls + k*o.Calls,
		Errors: s.Errors + k*o.Errors,
		RCU:    s.RCU + sign*o.RCU,
		WCU:    s.WCU + sign*o.WCU,
	}
}

// Stats is a snapshot of a Counters: per-operation counts, indexed by Operation.
type Stats struct {
	Ops [numOps]OpStats
}

// Op returns the counts for one operation.
func (s Stats) Op(o Operation) OpStats { return s.Ops[o] }

// Total sums all operations.
func (s Stats) Total() OpStats {
	var t OpStats
	for _, o := range s.Ops {
		t = t.add(o, 1)
	}
	return t
}

// Sub returns s minus earlier, the activity between two snapshots.
func (s Stats) Sub(earlier Stats) Stats {
	var d Stats
	for i := range s.Ops {
		d.Ops[i] = s.Ops[i].add(earlier.Ops[i], -1)
	}
	return d
}

// Add returns the sum of two snapshots.
func (s Stats) Add(o Stats) Stats {
	var d Stats
	for i := range s.Ops {
		d.Ops[i] = s.Ops[i].add(o.Ops[i], 1)
	}
	return d
}

// String lists the operations that were called, e.g.
// "GetItem=2(rcu=1) PutItem=1(wcu=1,err=1) total calls=3 rcu=1 wcu=1".
func (s Stats) String() string {
	var b strings.Builder
	for i, o := range s.Ops {
		if o.Calls == 0 && o.RCU == 0 && o.WCU == 0 {
			continue
		}
		fmt.Fprintf(&b, "%s=%d(", Operation(i), o.Calls)
		sep := ""
		if o.RCU != 0 {
			fmt.Fprintf(&b, "rcu=%g", o.RCU)
			sep = ","
		}
		if o.WCU != 0 {
			fmt.Fprintf(&b, "%swcu=%g", sep, o.WCU)
			sep = ","
		}
		if o.Errors != 0 {
			fmt.Fprintf(&b, "%serr=%d", sep, o.Errors)
		}
		b.WriteString(") ")
	}
	t := s.Total()
	fmt.Fprintf(&b, "total calls=%d rcu=%g wcu=%g", t.Calls, t.RCU, t.WCU)
	return b.String()
}

// Counters accumulates Stats with atomic counters; it is safe for concurrent
// use and cheap enough to leave on. Several Tables may share one (WithCounters).
type Counters struct {
	ops [numOps]opCounters
}

type opCounters struct {
	calls, errors atomic.Int64
	// capacity in thousandths of a unit (DynamoDB reports multiples of 0.5)
	rcu, wcu atomic.Int64
}

// Snapshot returns the current counts.
func (c *Counters) Snapshot() Stats {
	var s Stats
	for i := range c.ops {
		o := &c.ops[i]
		s.Ops[i] = OpStats{
			Calls:  o.calls.Load(),
			Errors: o.errors.Load(),
			RCU:    float64(o.rcu.Load()) / 1000,
			WCU:    float64(o.wcu.Load()) / 1000,
		}
	}
	return s
}

// Reset sets every count to zero.
func (c *Counters) Reset() {
	for i := range c.ops {
		o := &c.ops[i]
		o.calls.Store(0)
		o.errors.Store(0)
		o.rcu.Store(0)
		o.wcu.Store(0)
	}
}

// record counts one call of op, its error and the capacity it reported.
func (c *Counters) record(op Operation, err error, caps ...types.ConsumedCapacity) {
	o := &c.ops[op]
	o.calls.Add(1)
	if err != nil {
		o.errors.Add(1)
	}
	write := op != OpGetItem && op != OpBatchGetItem && op != OpQuery
	for _, cc := range caps {
		r, w := capUnits(cc, write)
		if r != 0 {
			o.rcu.Add(milli(r))
		}
		if w != 0 {
			o.wcu.Add(milli(w))
		}
	}
}

// capUnits splits a ConsumedCapacity into read and write units. DynamoDB
// fills ReadCapacityUnits/WriteCapacityUnits for some calls and only
// CapacityUnits for others; then the operation decides which kind it was.
func capUnits(cc types.ConsumedCapacity, write bool) (r, w float64) {
	if cc.ReadCapacityUnits != nil || cc.WriteCapacityUnits != nil {
		if cc.ReadCapacityUnits != nil {
			r = *cc.ReadCapacityUnits
		}
		if cc.WriteCapacityUnits != nil {
			w = *cc.WriteCapacityUnits
		}
		return r, w
	}
	if cc.CapacityUnits == nil {
		return 0, 0
	}
	if write {
		return 0, *cc.CapacityUnits
	}
	return *cc.CapacityUnits, 0
}

func milli(f float64) int64 { return int64(math.Round(f * 1000)) }
