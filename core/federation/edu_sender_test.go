package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/queue"
	"github.com/cirrus-matrix/cirrus/core/resources"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/signing"
	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/infra/bolt"
	"github.com/cirrus-matrix/cirrus/infra/boltqueue"
	"github.com/cirrus-matrix/cirrus/internal/testtable"
)

// fakeDest is a destination server that records the transactions it is
// sent, remembers their ids as the spec asks (a repeat is not processed
// again), and can be switched off.
type fakeDest struct {
	srv  *httptest.Server
	name string

	mu       sync.Mutex
	down     bool
	attempts []recvTxn          // every request, repeats included
	seen     map[string]recvTxn // by txn id: what was processed
	order    []string
}

type recvTxn struct {
	ID   string
	PDUs []json.RawMessage
	EDUs []struct {
		Type    string          `json:"edu_type"`
		Content json.RawMessage `json:"content"`
	}
}

func newFakeDest(t *testing.T) *fakeDest {
	fd := &fakeDest{seen: map[string]recvTxn{}}
	fd.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		txnID, ok := strings.CutPrefix(r.URL.Path, "/_matrix/federation/v1/send/")
		if !ok || r.Method != http.MethodPut {
			http.NotFound(w, r)
			return
		}
		fd.mu.Lock()
		defer fd.mu.Unlock()
		if fd.down {
			http.Error(w, `{"errcode":"M_UNKNOWN"}`, http.StatusBadGateway)
			return
		}
		raw, _ := io.ReadAll(r.Body)
		var rt recvTxn
		if err := json.Unmarshal(raw, &rt); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rt.ID = txnID
		fd.attempts = append(fd.attempts, rt)
		if _, dup := fd.seen[txnID]; !dup {
			fd.seen[txnID] = rt
			fd.order = append(fd.order, txnID)
		}
		_, _ = w.Write([]byte(`{"pdus":{}}`))
	}))
	t.Cleanup(fd.srv.Close)
	fd.name = strings.TrimPrefix(fd.srv.URL, "https://")
	return fd
}

func (fd *fakeDest) setDown(down bool) {
	fd.mu.Lock()
	fd.down = down
	fd.mu.Unlock()
}

// processed returns the EDU contents processed, in order, as "type content".
func (fd *fakeDest) processed() []string {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	var out []string
	for _, id := range fd.order {
		for _, e := range fd.seen[id].EDUs {
			out = append(out, e.Type+" "+string(e.Content))
		}
	}
	return out
}

func testService(t *testing.T) (*Service, queue.Queue) { return testServiceOn(t, "bolt") }

// testServiceOn builds a federation service on a table engine (the queue is
// always the embedded one).
func testServiceOn(t *testing.T, engine string) (*Service, queue.Queue) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "cirrus.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	q, err := boltqueue.New(db.Bolt(), resources.FederationQueue)
	if err != nil {
		t.Fatal(err)
	}
	tbl := db.Table()
	if engine != "bolt" {
		tbl = testtable.Open(t, engine)
	}
	key, _ := signing.Generate()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rs := rooms.New(tbl, "origin.test", key, log, nil)
	cfg := Config{SkipVerify: true, AllowPrivate: true, RequestTimeout: 5 * time.Second,
		MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond}
	return New(cfg, "origin.test", key, tbl, rs, q, log, nil), q
}

// pump receives and handles the sender's messages until none is left.
func pump(t *testing.T, sn *Sender, q queue.Queue) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < 50; i++ {
		msgs, err := q.Receive(ctx, queue.MaxBatch, 50*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 0 {
			return
		}
		sn.Handle(ctx, msgs)
	}
}

func receiptEDU(i int) map[string]any {
	return map[string]any{"!r:origin.test": map[string]any{"m.read": map[string]any{
		"@u:origin.test": map[string]any{"event_ids": []string{fmt.Sprintf("$e%d", i)}, "data": map[string]any{"ts": i}}}}}
}

func TestSenderEDUTransactions(t *testing.T) {
	f, q := testService(t)
	fd := newFakeDest(t)
	ctx := context.Background()
	const n = 150
	for i := 0; i < n; i++ {
		// Our own name and repeats are skipped.
		if err := f.SendEDU(ctx, []string{fd.name, "origin.test", fd.name}, "m.receipt", receiptEDU(i)); err != nil {
			t.Fatal(err)
		}
	}
	pump(t, f.Sender, q)
	got := fd.processed()
	if len(got) != n {
		t.Fatalf("%d EDUs delivered, want %d", len(got), n)
	}
	for i, g := range got {
		if want := fmt.Sprintf(`"$e%d"`, i); !strings.Contains(g, want) || !strings.HasPrefix(g, "m.receipt ") {
			t.Fatalf("EDU %d is %s, want %s", i, g, want)
		}
	}
	fd.mu.Lock()
	for _, id := range fd.order {
		if e := len(fd.seen[id].EDUs); e > MaxEDUsPerTxn {
			t.Errorf("transaction %s carries %d EDUs", id, e)
		}
	}
	if len(fd.order) < 2 {
		t.Errorf("%d transactions for %d EDUs", len(fd.order), n)
	}
	fd.mu.Unlock()
	// The outbox is empty afterwards.
	page, err := f.T.Query(ctx, tableQuery(fd.name))
	if err != nil || len(page.Items) != 0 {
		t.Fatalf("left in the outbox: %v %v", page.Items, err)
	}
}

func TestSenderEDURetryIsIdentical(t *testing.T) {
	f, q := testService(t)
	fd := newFakeDest(t)
	ctx := context.Background()
	// A typing notice already a minute old is not worth sending.
	realNow := f.Now
	f.Now = func() time.Time { return realNow().Add(-2 * time.Minute) }
	if err := f.SendEDU(ctx, []string{fd.name}, "m.typing", map[string]any{"room_id": "!r:origin.test", "user_id": "@u:origin.test", "typing": true}); err != nil {
		t.Fatal(err)
	}
	f.Now = realNow
	fd.setDown(true)
	for i := 0; i < 3; i++ {
		if err := f.SendEDU(ctx, []string{fd.name}, "m.presence", map[string]any{"push": []any{map[string]any{"user_id": "@u:origin.test", "presence": "online", "n": i}}}); err != nil {
			t.Fatal(err)
		}
	}
	// Down: the transaction is formed and recorded, the message backs off.
	msgs, err := q.Receive(ctx, queue.MaxBatch, time.Second)
	if err != nil || len(msgs) == 0 {
		t.Fatalf("receive: %v %v", msgs, err)
	}
	if failed := f.Sender.Handle(ctx, msgs); len(failed) != len(msgs) {
		t.Fatalf("failed %d of %d", len(failed), len(msgs))
	}
	first, _, err := f.Sender.pending(ctx, fd.name)
	if err != nil || first == nil {
		t.Fatalf("no pending transaction: %v", err)
	}
	// More EDUs while it is down go to a later transaction.
	if err := f.SendEDU(ctx, []string{fd.name}, "m.receipt", receiptEDU(7)); err != nil {
		t.Fatal(err)
	}
	// A worker dies after the destination accepted the transaction but
	// before it was removed: the next one re-sends the same transaction.
	fd.setDown(false)
	if err := f.Sender.send(ctx, fd.name, first); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // the backoff ends
	pump(t, f.Sender, q)

	fd.mu.Lock()
	var sameID []recvTxn
	for _, a := range fd.attempts {
		if a.ID == first.TxnID {
			sameID = append(sameID, a)
		}
	}
	fd.mu.Unlock()
	if len(sameID) != 2 {
		t.Fatalf("transaction %s sent %d times, want 2 (the retry after the crash)", first.TxnID, len(sameID))
	}
	a, _ := json.Marshal(sameID[0].EDUs)
	b, _ := json.Marshal(sameID[1].EDUs)
	if string(a) != string(b) || len(sameID[0].EDUs) != 3 {
		t.Fatalf("the retry differs or is wrong:\n%s\n%s", a, b)
	}
	got := fd.processed()
	if len(got) != 4 || !strings.HasPrefix(got[0], "m.presence ") || !strings.Contains(got[2], `"n":2`) || !strings.HasPrefix(got[3], "m.receipt ") {
		t.Fatalf("processed %q", got)
	}
	for _, g := range got {
		if strings.HasPrefix(g, "m.typing") {
			t.Fatalf("a stale typing notice was sent: %s", g)
		}
	}
}

func tableQuery(dest string) table.Query { return table.Query{PK: destPK(dest)} }

func TestSenderPDUsAndEDUsShareTransactions(t *testing.T) {
	f, q := testService(t)
	fd := newFakeDest(t)
	ctx := context.Background()
	var evs []*rooms.Event
	prev := f.Rooms.OnPersist
	f.Rooms.OnPersist = func(ev *rooms.Event) {
		prev(ev)
		evs = append(evs, ev)
	}
	if _, err := f.Rooms.CreateRoom(ctx, rooms.CreateRequest{Creator: "@a:origin.test", Preset: "public_chat"}); err != nil {
		t.Fatal(err)
	}
	if len(evs) < 3 {
		t.Fatalf("%d events", len(evs))
	}
	// The outbox item of an event is keyed by its stream position: writing
	// it twice (a repeated fan-out run) leaves one.
	for range 2 {
		for _, ev := range evs {
			sk := fmt.Sprintf("%s%016d#%s", outPrefix, ev.Pos, ev.EventID)
			if err := f.T.Put(ctx, table.Item{PK: destPK(fd.name), SK: sk, Data: []byte(ev.EventID)}, table.Cond{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := f.SendEDU(ctx, []string{fd.name}, "m.typing", map[string]any{"room_id": evs[0].RoomID, "user_id": "@a:origin.test", "typing": true}); err != nil {
		t.Fatal(err)
	}
	pump(t, f.Sender, q)
	fd.mu.Lock()
	defer fd.mu.Unlock()
	if len(fd.order) != 1 {
		t.Fatalf("%d transactions, want 1", len(fd.order))
	}
	txn := fd.seen[fd.order[0]]
	if len(txn.PDUs) != len(evs) || len(txn.EDUs) != 1 || txn.EDUs[0].Type != "m.typing" {
		t.Fatalf("transaction has %d PDUs (want %d) and EDUs %+v", len(txn.PDUs), len(evs), txn.EDUs)
	}
	for i, raw := range txn.PDUs {
		var p struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(raw, &p)
		if p.Type != evs[i].Type {
			t.Fatalf("PDU %d is %s, want %s (stream order)", i, p.Type, evs[i].Type)
		}
	}
}

func TestSendEDUManyDestinations(t *testing.T) {
	f, _ := testService(t)
	ctx := context.Background()
	var dests []string
	for i := range 250 {
		dests = append(dests, fmt.Sprintf("d%d.example", i))
	}
	dests = append(dests, "not a server name!", "origin.test")
	if err := f.SendEDU(ctx, dests, "m.presence", map[string]any{"push": []any{}}); err != nil {
		t.Fatal(err)
	}
	for i, d := range dests {
		page, err := f.T.Query(ctx, table.Query{PK: destPK(d), Prefix: eduPrefix})
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int{true: 1, false: 0}[i < 250]; len(page.Items) != want {
			t.Fatalf("%s has %d EDUs, want %d", d, len(page.Items), want)
		}
	}
}

func TestSenderSkipsExpiredEDUs(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			f, q := testServiceOn(t, engine)
			fd := newFakeDest(t)
			ctx := context.Background()
			// More expired typing notices than a transaction holds, then a
			// receipt behind them: the receipt still goes out.
			realNow := f.Now
			f.Now = func() time.Time { return realNow().Add(-2 * time.Minute) }
			for i := 0; i < MaxEDUsPerTxn+20; i++ {
				if err := f.SendEDU(ctx, []string{fd.name}, "m.typing", map[string]any{"room_id": "!r:origin.test", "user_id": "@u:origin.test", "typing": i%2 == 0}); err != nil {
					t.Fatal(err)
				}
			}
			f.Now = realNow
			if err := f.SendEDU(ctx, []string{fd.name}, "m.receipt", receiptEDU(1)); err != nil {
				t.Fatal(err)
			}
			pump(t, f.Sender, q)
			if got := fd.processed(); len(got) != 1 || !strings.HasPrefix(got[0], "m.receipt ") {
				t.Fatalf("processed %q", got)
			}
		})
	}
}

// TestDeliverIsIdempotent: the fan-out handler queues our events once per
// destination however often it runs, and only ours.
func TestDeliverIsIdempotent(t *testing.T) {
	f, _ := testService(t)
	ctx := context.Background()
	var evs []*rooms.Event
	prev := f.Rooms.OnPersist
	f.Rooms.OnPersist = func(ev *rooms.Event) {
		prev(ev)
		evs = append(evs, ev)
	}
	if _, err := f.Rooms.CreateRoom(ctx, rooms.CreateRequest{Creator: "@a:origin.test", Preset: "public_chat"}); err != nil {
		t.Fatal(err)
	}
	// A membership event names its target's server as a destination.
	remote := "remote.test"
	target := "@r:" + remote
	ev := *evs[len(evs)-1]
	ev.Type, ev.StateKey = "m.room.member", &target
	foreign := ev
	foreign.Sender = id.UserID("@x:" + remote)
	rejected := ev
	rejected.Rejected = true
	for _, e := range []*rooms.Event{&ev, &ev, &ev, &foreign, &rejected} {
		if err := f.Sender.Deliver(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	page, err := f.T.Query(ctx, table.Query{PK: destPK(remote), Prefix: outPrefix})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Items) != 1 || string(page.Items[0].Data) != string(ev.EventID) {
		t.Fatalf("outbox %+v", page.Items)
	}
}
