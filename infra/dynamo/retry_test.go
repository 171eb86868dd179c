package dynamo

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// scripted is a fake DynamoDB endpoint that answers each call with the next
// canned response, for the error paths the emulator never takes (it runs
// transactions one at a time, so they never conflict).
type scripted struct {
	mu      sync.Mutex
	replies []string // response bodies: errors carry a __type, "" is an empty success
	calls   []string // X-Amz-Target of each request
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	s.mu.Lock()
	target := r.Header.Get("X-Amz-Target")
	s.calls = append(s.calls, target[strings.LastIndex(target, ".")+1:])
	reply := `{}`
	status := 200
	if len(s.replies) > 0 {
		if s.replies[0] != "" {
			reply = s.replies[0]
		}
		if strings.Contains(reply, `"__type"`) {
			status = 400
		}
		s.replies = s.replies[1:]
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, reply)
}

func fakeTable(t *testing.T, replies ...string) (*Table, *scripted) {
	s := &scripted{replies: replies}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	client := dynamodb.New(dynamodb.Options{
		Region:           "us-east-1",
		BaseEndpoint:     aws.String(srv.URL),
		Credentials:      credentials.NewStaticCredentialsProvider("a", "b", ""),
		RetryMaxAttempts: 1,
	})
	return New(client, "t", WithRetries(3, time.Millisecond)), s
}

func canceled(codes ...string) string {
	var rs []string
	for _, c := range codes {
		rs = append(rs, fmt.Sprintf(`{"Code":%q}`, c))
	}
	return `{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","Message":"cancelled","CancellationReasons":[` + strings.Join(rs, ",") + `]}`
}

const conflictExc = `{"__type":"com.amazonaws.dynamodb.v20120810#TransactionConflictException","message":"conflict"}`

func TestTransactConflictRetries(t *testing.T) {
	ops := []table.Op{
		table.Put(table.Item{PK: "a", SK: "1"}, table.Cond{}),
		table.Check(table.Key{PK: "b", SK: "1"}, table.IfExists()),
	}
	ctx := t.Context()

	// Two conflicts, then success.
	tb, s := fakeTable(t, canceled("TransactionConflict", "None"), canceled("None", "TransactionConflict"), "")
	if err := tb.Transact(ctx, ops); err != nil {
		t.Fatalf("Transact after two conflicts: %v", err)
	}
	if len(s.calls) != 3 || tb.Stats().Op(OpTransactWriteItems).Calls != 3 || tb.Stats().Op(OpTransactWriteItems).Errors != 2 {
		t.Errorf("calls %v, stats %v", s.calls, tb.Stats())
	}

	// Conflicts every time: ErrConflict after 1 + 3 tries.
	tb, s = fakeTable(t, canceled("TransactionConflict", "None"), canceled("TransactionConflict", "None"),
		canceled("TransactionConflict", "None"), canceled("TransactionConflict", "None"), "")
	if err := tb.Transact(ctx, ops); !errors.Is(err, table.ErrConflict) || errors.Is(err, table.ErrConditionFailed) {
		t.Fatalf("Transact with endless conflicts: %v, want ErrConflict", err)
	}
	if len(s.calls) != 4 {
		t.Errorf("%d calls, want 4", len(s.calls))
	}

	// A failed condition is reported at once, with its index.
	tb, s = fakeTable(t, canceled("None", "ConditionalCheckFailed"))
	var txe *table.TxError
	if err := tb.Transact(ctx, ops); !errors.As(err, &txe) || txe.Index != 1 {
		t.Fatalf("Transact with failed check: %v, want TxError{1}", err)
	}
	if len(s.calls) != 1 {
		t.Errorf("%d calls, want 1", len(s.calls))
	}

	// An item collection or validation reason is not retried.
	tb, s = fakeTable(t, canceled("ValidationError", "None"))
	if err := tb.Transact(ctx, ops); err == nil || errors.Is(err, table.ErrConflict) || len(s.calls) != 1 {
		t.Fatalf("Transact with validation reason: %v after %d calls", err, len(s.calls))
	}
}

func TestWriteConflictRetries(t *testing.T) {
	ctx := t.Context()
	tb, s := fakeTable(t, conflictExc, "")
	if err := tb.Put(ctx, table.Item{PK: "a", SK: "1"}, table.Cond{}); err != nil {
		t.Fatalf("Put after a conflict: %v", err)
	}
	if len(s.calls) != 2 || s.calls[0] != "PutItem" {
		t.Errorf("calls %v", s.calls)
	}
	tb, s = fakeTable(t, conflictExc, conflictExc, conflictExc, conflictExc)
	if err := tb.Delete(ctx, table.Key{PK: "a", SK: "1"}, table.Cond{}); !errors.Is(err, table.ErrConflict) {
		t.Fatalf("Delete with endless conflicts: %v", err)
	}
	if len(s.calls) != 4 {
		t.Errorf("%d calls, want 4", len(s.calls))
	}
	tb, s = fakeTable(t, conflictExc, `{"Attributes":{"n":{"N":"42"}},"ConsumedCapacity":{"TableName":"t","CapacityUnits":1}}`)
	if n, err := tb.Add(ctx, table.Key{PK: "a", SK: "1"}, 1); err != nil || n != 42 {
		t.Fatalf("Add after a conflict: %d, %v", n, err)
	}
	if st := tb.Stats().Op(OpUpdateItem); st != (OpStats{Calls: 2, Errors: 1, WCU: 1}) {
		t.Errorf("UpdateItem stats %+v", st)
	}
	tb, s = fakeTable(t, conflictExc, conflictExc, conflictExc, conflictExc)
	if _, err := tb.Add(ctx, table.Key{PK: "a", SK: "1"}, 1); !errors.Is(err, table.ErrConflict) {
		t.Fatalf("Add with endless conflicts: %v", err)
	}
	if len(s.calls) != 4 {
		t.Errorf("%d calls, want 4", len(s.calls))
	}
}
