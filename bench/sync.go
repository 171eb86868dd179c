package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// The /sync measurements run only when the server has /sync: until then
// GET /sync answers 404 M_UNRECOGNIZED and the harness reports
// notImplemented instead.
const notImplemented = "n/a (sync not implemented)"

// syncRun is what the harness measured of /sync in one message-path run.
type syncRun struct {
	Implemented bool      `json:"implemented"`
	Status      string    `json:"status"`
	Error       string    `json:"error,omitempty"`
	Delivery    *delivery `json:"delivery,omitempty"`
	Initial     Dist      `json:"initial_sync_latency"`
	InitialSize int       `json:"initial_sync_bytes"`
}

// delivery: send returns → the observer's long-polling /sync returns the event.
type delivery struct {
	Latency Dist `json:"latency"`
	Acked   int  `json:"acked"`     // sends that returned an event id
	Seen    int  `json:"delivered"` // of those, delivered at least once
	Missing int  `json:"missing"`
	Dups    int  `json:"duplicated"` // delivered more than once
	Unknown int  `json:"unknown"`    // load messages delivered that no send acknowledged
	Limited int  `json:"limited_timelines"`
	// Early counts events /sync returned before their send's answer
	// arrived (their latency is counted as 0).
	Early       int  `json:"before_send_returned"`
	ExactlyOnce bool `json:"exactly_once"`
}

const syncPath = "/_matrix/client/v3/sync"

// observerFilter asks for whole timelines, so that an incremental sync
// during the load is never limited (a limited timeline would hide events).
var observerFilter = url.QueryEscape(`{"room":{"timeline":{"limit":1000}}}`)

// probeSync asks /sync once. Any answer but 404 M_UNRECOGNIZED means the
// server has /sync and the measurements run.
func probeSync(ctx context.Context, c *client, token string) syncRun {
	_, err := c.do(ctx, http.MethodGet, syncPath+"?timeout=0", token, nil, nil)
	if me, ok := err.(*matrixError); ok && me.Status == http.StatusNotFound && me.Code == "M_UNRECOGNIZED" {
		return syncRun{Status: notImplemented}
	}
	r := syncRun{Implemented: true, Status: "measured"}
	if err != nil {
		r.Error = "first /sync: " + err.Error()
		r.Status = "error"
	}
	return r
}

// syncResponse is the part of a /sync answer the harness reads.
type syncResponse struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events  []syncEvent `json:"events"`
				Limited bool        `json:"limited"`
			} `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
}

type syncEvent struct {
	EventID string `json:"event_id"`
	Type    string `json:"type"`
	Content struct {
		Body string `json:"body"`
	} `json:"content"`
}

// observer is a client that long-polls /sync during the load and notes when
// each load message reaches it.
type observer struct {
	c      *client
	token  string
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	since   string // the last next_batch
	first   map[string]time.Time
	count   map[string]int
	limited int
	err     error
}

func startObserver(ctx context.Context, c *client, token string) (*observer, error) {
	var first syncResponse
	if _, err := c.do(ctx, http.MethodGet, syncPath+"?timeout=0&filter="+observerFilter, token, nil, &first); err != nil {
		return nil, fmt.Errorf("initial /sync: %w", err)
	}
	if first.NextBatch == "" {
		return nil, fmt.Errorf("initial /sync: no next_batch")
	}
	return resumeObserver(ctx, c, token, first.NextBatch)
}

// resumeObserver starts an observer that long-polls from since.
func resumeObserver(ctx context.Context, c *client, token, since string) (*observer, error) {
	octx, cancel := context.WithCancel(ctx)
	o := &observer{c: c, token: token, cancel: cancel, done: make(chan struct{}), since: since,
		first: map[string]time.Time{}, count: map[string]int{}}
	go o.loop(octx, since)
	return o, nil
}

// lastBatch is the since token the observer would poll with next.
func (o *observer) lastBatch() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.since
}

// lastSeen is when the observer first saw its most recently arrived event.
func (o *observer) lastSeen() time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	var last time.Time
	for _, t := range o.first {
		if t.After(last) {
			last = t
		}
	}
	return last
}

// maxPolls bounds the observer's loop (a load of M messages needs at most M
// wake-ups, plus timeouts).
const maxPolls = 1_000_000

func (o *observer) loop(ctx context.Context, since string) {
	defer close(o.done)
	for range maxPolls {
		var r syncResponse
		_, err := o.c.do(ctx, http.MethodGet, syncPath+"?timeout=25000&filter="+observerFilter+"&since="+url.QueryEscape(since), o.token, nil, &r)
		at := time.Now()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			o.mu.Lock()
			o.err = err
			o.mu.Unlock()
			return
		}
		o.mu.Lock()
		for _, room := range r.Rooms.Join {
			if room.Timeline.Limited {
				o.limited++
			}
			for _, ev := range room.Timeline.Events {
				if ev.Type != "m.room.message" || !strings.HasPrefix(ev.Content.Body, benchBody) {
					continue
				}
				if o.count[ev.EventID] == 0 {
					o.first[ev.EventID] = at
				}
				o.count[ev.EventID]++
			}
		}
		if r.NextBatch != "" {
			since, o.since = r.NextBatch, r.NextBatch
		}
		o.mu.Unlock()
	}
}

// finish waits until every acknowledged send has been seen (or grace has
// passed since the load ended), then stops the observer.
func (o *observer) finish(sends []sent, grace time.Duration) {
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		o.mu.Lock()
		missing := 0
		for _, s := range sends {
			if s.eventID != "" && o.count[s.eventID] == 0 {
				missing++
			}
		}
		failed := o.err != nil
		o.mu.Unlock()
		if missing == 0 || failed {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A last moment for a duplicate to show up, then stop.
	time.Sleep(100 * time.Millisecond)
	o.cancel()
	<-o.done
}

func (o *observer) report(sends []sent) *delivery {
	o.mu.Lock()
	defer o.mu.Unlock()
	d := &delivery{Limited: o.limited}
	acked := map[string]bool{}
	var lat []time.Duration
	for _, s := range sends {
		if s.eventID == "" {
			continue
		}
		d.Acked++
		acked[s.eventID] = true
		n := o.count[s.eventID]
		switch {
		case n == 0:
			d.Missing++
			continue
		case n > 1:
			d.Dups++
		}
		d.Seen++
		l := o.first[s.eventID].Sub(s.done)
		if l < 0 {
			d.Early++
			l = 0
		}
		lat = append(lat, l)
	}
	for eid := range o.count {
		if !acked[eid] {
			d.Unknown++
		}
	}
	d.Latency = Summarize(lat)
	d.ExactlyOnce = d.Acked > 0 && d.Missing == 0 && d.Dups == 0 && d.Unknown == 0 && o.err == nil
	return d
}

// measureInitialSync times a full initial /sync (no since, no filter) of a
// user who is in every room, five times.
func measureInitialSync(ctx context.Context, c *client, token string, r *syncRun) {
	var ts []time.Duration
	var sizes []float64
	for range 5 {
		t := time.Now()
		n, err := c.do(ctx, http.MethodGet, syncPath+"?timeout=0", token, nil, nil)
		if err != nil {
			r.Error = "initial /sync: " + err.Error()
			return
		}
		ts = append(ts, time.Since(t))
		sizes = append(sizes, float64(n))
	}
	r.Initial = Summarize(ts)
	r.InitialSize = int(Median(sizes))
}
