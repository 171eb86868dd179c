package main

import (
	"fmt"
	"math"
	"sync"
	"testing"
	"time"
)

// These tests check the harness's pure parts; the benchmarks themselves run
// only under `make bench`.

func TestPercentile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	for _, c := range []struct{ p, want float64 }{{50, 5}, {90, 9}, {95, 10}, {99, 10}, {100, 10}, {1, 1}, {10, 1}, {11, 2}} {
		if got := Percentile(xs, c.p); got != c.want {
			t.Errorf("Percentile(p%v) = %v, want %v", c.p, got, c.want)
		}
	}
	if xs[0] != 5 {
		t.Error("Percentile sorted its input")
	}
	if Percentile(nil, 50) != 0 {
		t.Error("Percentile(nil) != 0")
	}
	if Median([]float64{3, 1, 2}) != 2 || Median([]float64{4, 1, 2, 3}) != 2.5 || Median(nil) != 0 {
		t.Error("Median")
	}
}

func TestSummarize(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 200; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	d := Summarize(ds)
	if d.N != 200 || d.Min != 1 || d.P50 != 100 || d.P95 != 190 || d.P99 != 198 || d.Max != 200 {
		t.Errorf("Summarize = %+v", d)
	}
	m := MedianDist([]Dist{{P50: 1, N: 1}, {P50: 3, N: 3}, {P50: 2, N: 2}})
	if m.P50 != 2 || m.N != 2 {
		t.Errorf("MedianDist = %+v", m)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

func TestCostModel(t *testing.T) {
	send := &OpCounts{Calls: 6, RRU: 4, WRU: 10, WallMS: 2}
	r := Cost(ReferenceCommunity, CostInputs{Send: send}, PriceTable, DefaultParams)
	var held, sends *CostLine
	for i := range r.Lines {
		switch r.Lines[i].Item {
		case "/sync long-polls held (wall time)":
			held = &r.Lines[i]
		case "message sends (ClientSend)":
			sends = &r.Lines[i]
		}
	}
	if held == nil || sends == nil {
		t.Fatalf("lines missing: %+v", r.Lines)
	}
	// The figure: about $4.32 per always-connected client per month at 128 MB.
	if got := held.Total / ReferenceCommunity.ConnectedClients; math.Abs(got-4.32) > 0.01 {
		t.Errorf("held sync per client = $%.4f, want about $4.32", got)
	}
	// 60,000 sends: $0.012 Lambda requests, $0.06 HTTP API, 600k WRU $0.375,
	// 240k RRU $0.03, and 60,000 × 32 ms × 0.125 GB of duration.
	wantLambda := 60000*0.20/1e6 + 60000*0.032*0.125*0.0000133334
	if !near(sends.Lambda, wantLambda) || !near(sends.HTTPAPI, 0.06) || !near(sends.Dynamo, 0.375+0.03) {
		t.Errorf("sends = %+v", sends)
	}
	if r.Complete {
		t.Error("a report without sync, federation and media counts claims to be complete")
	}
	idle := Cost(IdleServer, CostInputs{Send: send}, PriceTable, DefaultParams)
	if idle.Total != 0 || !idle.Complete {
		t.Errorf("idle server costs $%v (complete %v), want 0", idle.Total, idle.Complete)
	}
	idle = Cost(IdleServer, CostInputs{Send: send, QueueWorkers: []string{"federation-sender"}}, PriceTable, DefaultParams)
	if idle.Complete {
		t.Error("an idle server with a queue worker claims a complete cost (its SQS pollers are not measured)")
	}
	sum := 0.0
	for _, l := range r.Lines {
		sum += l.Total
	}
	if !near(sum, r.Total) {
		t.Errorf("lines sum to %v, total %v", sum, r.Total)
	}
}

func TestCamel(t *testing.T) {
	if camel("client-send") != "ClientSend" || camel("homeserver") != "Homeserver" {
		t.Error(camel("client-send"), camel("homeserver"))
	}
}

func TestProbeForEveryFunction(t *testing.T) {
	for _, fn := range []string{"ClientDiscovery", "ClientAuth", "ClientAccount", "ClientRooms", "ClientSend", "ClientTimeline", "ClientUserData", "FederationSend"} {
		p, err := probeFor(fn, fixture{user: "@alice:bench.test", room: "!room:bench.test"}, 1)
		if err != nil || p.Path == "" {
			t.Errorf("probeFor(%s) = %+v, %v", fn, p, err)
		}
		if _, err := apiEvent(p, "token"); err != nil {
			t.Error(err)
		}
	}
}

func TestProbeForWorker(t *testing.T) {
	p, err := probeFor("SomeQueueWorker", fixture{}, 1)
	if err != nil || !p.SQS {
		t.Errorf("a function without routes gets %+v, %v; want an SQS batch", p, err)
	}
}

func TestCostModelSync(t *testing.T) {
	in := CostInputs{
		Send:     &OpCounts{Calls: 6, RRU: 4, WRU: 10, WallMS: 2},
		SyncIdle: &OpCounts{RRU: 20},
		SyncHeld: &OpCounts{RRU: 182, WallMS: 25000},
		SyncWake: &OpCounts{RRU: 150},
	}
	r := Cost(ReferenceCommunity, in, PriceTable, DefaultParams)
	lines := map[string]CostLine{}
	for _, l := range r.Lines {
		lines[l.Item] = l
	}
	// 10 clients: 60,000 messages wake each (600,000 × 150 RRU), and each
	// returns empty every 25 s (1,036,800 × 20 RRU).
	q := lines["/sync requests (wake-ups + empty returns)"]
	if q.Status != StatusMeasured || !near(q.Requests, 600000+1036800) || !near(q.RRU, 600000*150+1036800*20) {
		t.Errorf("sync requests = %+v", q)
	}
	// Waiting reads (182-20)/25 = 6.48 units per held second, all month long.
	w := lines["/sync waiting: reads while held (cross-instance wake-up)"]
	if !near(w.RRU, 10*2592000*6.48) || !near(w.Dynamo, 10*2592000*6.48*0.125/1e6) {
		t.Errorf("sync waiting = %+v", w)
	}
}

func TestCleanups(t *testing.T) {
	var c cleanups
	var order []int
	var mu sync.Mutex
	note := func(i int) func() {
		return func() {
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
		}
	}
	c.add(note(1))
	c.add(func() { c.add(note(3)) }) // a cleanup that registers another
	c.add(note(2))
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(c.run)
	}
	wg.Wait()
	c.add(note(4)) // after the end: runs at once
	if fmt.Sprint(order) != "[2 1 3 4]" {
		t.Errorf("cleanups ran as %v, want [2 1 3 4]", order)
	}
}

// TestCostModelSyncOrigin: with the long-polls on a sync origin host, the
// held wall time becomes the host's fixed price and the /sync requests
// cost API Gateway but no Lambda; the rest is unchanged.
func TestCostModelSyncOrigin(t *testing.T) {
	in := CostInputs{
		Send:     &OpCounts{Calls: 6, RRU: 4, WRU: 10, WallMS: 2},
		SyncIdle: &OpCounts{RRU: 20, WallMS: 5},
		SyncHeld: &OpCounts{RRU: 182, WallMS: 25000},
		SyncWake: &OpCounts{RRU: 150, WallMS: 8},
	}
	origin := DefaultParams
	origin.SyncOrigin = true
	lam, host := Cost(ReferenceCommunity, in, PriceTable, DefaultParams), Cost(ReferenceCommunity, in, PriceTable, origin)
	byItem := func(r CostReport) map[string]CostLine {
		m := map[string]CostLine{}
		for _, l := range r.Lines {
			m[l.Item] = l
		}
		return m
	}
	l, h := byItem(lam), byItem(host)
	if _, ok := h["/sync long-polls held (wall time)"]; ok {
		t.Error("the sync origin still pays Lambda for held long-polls")
	}
	hl := h["sync origin host (SyncOrigin), fixed"]
	if !near(hl.Total, PriceTable.HostPerMonth) || math.Abs(PriceTable.HostPerMonth-6.716) > 0.01 {
		t.Errorf("host line %+v (host price %v)", hl, PriceTable.HostPerMonth)
	}
	q, lq := h["/sync requests (wake-ups + empty returns)"], l["/sync requests (wake-ups + empty returns)"]
	if q.Lambda != 0 || !near(q.HTTPAPI, lq.HTTPAPI) || !near(q.Dynamo, lq.Dynamo) || !near(q.Total, lq.Total-lq.Lambda) {
		t.Errorf("proxied sync requests %+v (on Lambda %+v)", q, lq)
	}
	held := l["/sync long-polls held (wall time)"].Total
	if want := lam.Total - held - lq.Lambda + PriceTable.HostPerMonth; !near(host.Total, want) {
		t.Errorf("total with the origin %v, want %v", host.Total, want)
	}
}
