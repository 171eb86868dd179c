package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// fedConfig is the federation workload.
type fedConfig struct {
	Messages int `json:"messages"` // sent one at a time by alice on A, observed by bob on B
	// Interval paces the measured messages (a chat, not a flood: sent back
	// to back, the asynchronous pipeline behind each send builds a backlog
	// and the figure measures throughput instead).
	Interval time.Duration `json:"interval_ns"`
	CatchUp  int           `json:"catch_up_messages"`
}

// fedRun is one run of the federation path: two all-in-one processes on
// the embedded store, federating over HTTPS on loopback.
type fedRun struct {
	Delivery *delivery `json:"delivery"` // alice's send on A returns → bob's /sync on B returns the event
	// CatchUpSeconds: B was stopped while alice sent CatchUp messages; from
	// B answering again (restarted on the same data) until bob's /sync has
	// all of them. B's first outbound request (bob's message) tells A that B
	// is back, which ends A's retry backoff.
	CatchUpSeconds float64   `json:"catch_up_s"`
	CatchUp        *delivery `json:"catch_up_delivery"`
	Error          string    `json:"error,omitempty"`
}

// fedServer is one of the two processes.
type fedServer struct {
	name, dir, clientAddr, fedAddr, bin string
	p                                   *proc
	c                                   *client
}

func newFedServer(bin, dir, host string) (*fedServer, error) {
	cp, err := freePort()
	if err != nil {
		return nil, err
	}
	fp, err := freePort()
	if err != nil {
		return nil, err
	}
	return &fedServer{name: fmt.Sprintf("%s:%d", host, fp), dir: dir, bin: bin,
		clientAddr: fmt.Sprintf("127.0.0.1:%d", cp), fedAddr: fmt.Sprintf("127.0.0.1:%d", fp)}, nil
}

// start runs the server (again, on the same data and ports) and waits for it.
func (s *fedServer) start(ctx context.Context) error {
	env := envList(baseEnv(), map[string]string{
		"CIRRUS_SERVER_NAME":                    s.name,
		"CIRRUS_LISTEN_ADDR":                    s.clientAddr,
		"CIRRUS_DATA_DIR":                       filepath.Join(s.dir, "data"),
		"CIRRUS_REGISTRATION":                   "open",
		"CIRRUS_RATE_LIMITS":                    "false",
		"CIRRUS_BCRYPT_COST":                    "4",
		"CIRRUS_LOG_LEVEL":                      "warn",
		"CIRRUS_FEDERATION_LISTEN_ADDR":         s.fedAddr,
		"CIRRUS_FEDERATION_TLS_SKIP_VERIFY":     "true", // self-signed certificates on loopback
		"CIRRUS_FEDERATION_ALLOW_PRIVATE_ADDRS": "true",
	})
	p, err := startProc(s.name, s.bin, env, filepath.Join(s.dir, fmt.Sprintf("server-%d.log", time.Now().UnixNano())))
	if err != nil {
		return err
	}
	s.p = p
	if s.c == nil {
		s.c = newClient("http://"+s.clientAddr, 4)
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.c.ready(rctx); err != nil {
		if e := p.exited(); e != nil {
			return e
		}
		return err
	}
	return nil
}

// runFederationPath measures delivery between two servers and catch-up
// after one of them restarts.
func runFederationPath(ctx context.Context, bin, work string, cfg fedConfig, idx int) (*fedRun, error) {
	dir := filepath.Join(work, fmt.Sprintf("federation-run-%d", idx))
	var servers [2]*fedServer
	for i, host := range []string{"localhost", "127.0.0.1"} {
		d := filepath.Join(dir, string(rune('a'+i)))
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
		s, err := newFedServer(bin, d, host)
		if err != nil {
			return nil, err
		}
		if err := s.start(ctx); err != nil {
			return nil, err
		}
		defer func() { s.p.stop(); s.c.close() }()
		servers[i] = s
	}
	a, b := servers[0], servers[1]
	alice, err := a.c.register(ctx, "alice", benchPassword)
	if err != nil {
		return nil, err
	}
	bob, err := b.c.register(ctx, "bob", benchPassword)
	if err != nil {
		return nil, err
	}
	room, err := a.c.createRoom(ctx, alice.AccessToken, "federation bench")
	if err != nil {
		return nil, err
	}
	// bob joins over federation (make_join/send_join through A).
	joinPath := "/_matrix/client/v3/join/" + url.PathEscape(room) + "?server_name=" + url.QueryEscape(a.name)
	if _, err := b.c.do(ctx, http.MethodPost, joinPath, bob.AccessToken, map[string]any{}, nil); err != nil {
		return nil, fmt.Errorf("bob joins over federation: %w", err)
	}

	run := &fedRun{}
	obs, err := startObserver(ctx, b.c, bob.AccessToken)
	if err != nil {
		return nil, err
	}
	sends := sendSerial(ctx, a.c, alice.AccessToken, room, fmt.Sprintf("fed%d-", idx), cfg.Messages, cfg.Interval)
	obs.finish(sends, 30*time.Second)
	run.Delivery = obs.report(sends)

	// Catch-up: B down while alice talks, then back.
	since := obs.lastBatch()
	b.p.stop()
	backlog := sendSerial(ctx, a.c, alice.AccessToken, room, fmt.Sprintf("fedcu%d-", idx), cfg.CatchUp, 0)
	if err := b.start(ctx); err != nil {
		return nil, fmt.Errorf("restarting B: %w", err)
	}
	back := time.Now()
	obs2, err := resumeObserver(ctx, b.c, bob.AccessToken, since)
	if err != nil {
		return nil, err
	}
	if _, err := b.c.send(ctx, bob.AccessToken, room, fmt.Sprintf("back-%d", idx), "bob is back"); err != nil {
		return nil, fmt.Errorf("bob's message after the restart: %w", err)
	}
	obs2.finish(backlog, 60*time.Second)
	run.CatchUp = obs2.report(backlog)
	if run.CatchUp.Missing == 0 {
		run.CatchUpSeconds = obs2.lastSeen().Sub(back).Seconds()
	} else {
		run.Error = fmt.Sprintf("%d of %d messages sent while B was down had not arrived 60 s after it returned", run.CatchUp.Missing, len(backlog))
	}
	return run, nil
}

// sendSerial sends n messages one after another, starting one every
// interval (or back to back).
func sendSerial(ctx context.Context, c *client, token, room, prefix string, n int, interval time.Duration) []sent {
	out := make([]sent, n)
	start := time.Now()
	for k := range n {
		if wait := time.Until(start.Add(time.Duration(k) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		t := time.Now()
		eid, err := c.send(ctx, token, room, fmt.Sprintf("%s%d", prefix, k), fmt.Sprintf("%s%s%d", benchBody, prefix, k))
		done := time.Now()
		out[k] = sent{eventID: eid, room: room, done: done, latency: done.Sub(t), err: err}
	}
	return out
}

// fedSummary is the medians over the federation runs.
type fedSummary struct {
	Delivery       Dist    `json:"delivery_latency_median_of_runs"`
	CatchUpSeconds float64 `json:"catch_up_s_median"`
	ExactlyOnce    bool    `json:"exactly_once"`
	Runs           int     `json:"runs"`
}

func summarizeFederation(runs []*fedRun) *fedSummary {
	if len(runs) == 0 {
		return nil
	}
	var p50, p95, p99, cu []float64
	once := true
	for _, r := range runs {
		p50 = append(p50, r.Delivery.Latency.P50)
		p95 = append(p95, r.Delivery.Latency.P95)
		p99 = append(p99, r.Delivery.Latency.P99)
		cu = append(cu, r.CatchUpSeconds)
		once = once && r.Delivery.ExactlyOnce && r.CatchUp.ExactlyOnce
	}
	return &fedSummary{Delivery: Dist{P50: Median(p50), P95: Median(p95), P99: Median(p99), N: runs[0].Delivery.Latency.N},
		CatchUpSeconds: Median(cu), ExactlyOnce: once, Runs: len(runs)}
}
