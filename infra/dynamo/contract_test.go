package dynamo

import (
	"testing"

	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/core/table/tabletest"
)

// TestContract runs the port's contract suite against DynamoDB. The suite
// keeps its subtests apart by partition key, so they all share one table.
func TestContract(t *testing.T) {
	tb, _ := newTestTable(t)
	tabletest.Run(t, func(t *testing.T) table.Table {
		return New(tb.client, tb.Name(), WithCounters(tb.Counters()))
	})
	t.Logf("DynamoDB calls made by the contract suite: %v", tb.Stats())
}
