package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// loadConfig is the message-path workload (defaults from issue 8).
type loadConfig struct {
	Users    int `json:"users"`
	Rooms    int `json:"rooms"`
	Messages int `json:"messages"`
	Senders  int `json:"senders"`
	Pages    int `json:"messages_pages"` // /messages requests timed after the load
}

// messageRun is one run of the message path on a fresh all-in-one process.
type messageRun struct {
	SendPerSecond float64 `json:"send_events_per_s"`
	Sent          int     `json:"sent"`
	SendErrors    int     `json:"send_errors"`
	FirstError    string  `json:"first_error,omitempty"`
	Send          Dist    `json:"send_latency"`
	MessagesPage  Dist    `json:"messages_page_latency"`
	PageEvents    int     `json:"messages_page_events"`
	RSSIdleMiB    float64 `json:"rss_idle_mib"`
	RSSSetupMiB   float64 `json:"rss_after_setup_mib"`
	RSSPeakMiB    float64 `json:"rss_peak_load_mib"` // highest VmRSS sampled during the load
	HWMMiB        float64 `json:"vmhwm_mib"`         // the kernel's peak RSS over the whole run
	SetupSeconds  float64 `json:"setup_s"`
	// ServerCPU is the server's CPU time during the load over the load's
	// wall time: cores busy on average (of the machine's CPUs).
	ServerCPU float64 `json:"server_cpu_cores"`
	Sync      syncRun `json:"sync"`
}

const benchPassword = "bench-password-1"

// runMessagePath starts the all-in-one binary on a fresh embedded store,
// sets up users and rooms, and drives the load over HTTP.
func runMessagePath(ctx context.Context, bin, work string, cfg loadConfig, idx int) (*messageRun, error) {
	dir := filepath.Join(work, fmt.Sprintf("message-run-%d", idx))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	env := envList(baseEnv(), map[string]string{
		"CIRRUS_SERVER_NAME":  "bench.test",
		"CIRRUS_LISTEN_ADDR":  addr,
		"CIRRUS_DATA_DIR":     filepath.Join(dir, "data"),
		"CIRRUS_REGISTRATION": "open",
		"CIRRUS_RATE_LIMITS":  "false",
		"CIRRUS_BCRYPT_COST":  "4",
		"CIRRUS_LOG_LEVEL":    "warn",
	})
	p, err := startProc("homeserver", bin, env, filepath.Join(dir, "server.log"))
	if err != nil {
		return nil, err
	}
	defer p.stop()
	c := newClient("http://"+addr, cfg.Senders+4)
	defer c.close()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = c.ready(rctx)
	cancel()
	if err != nil {
		if e := p.exited(); e != nil {
			return nil, e
		}
		return nil, err
	}
	run := &messageRun{}
	time.Sleep(300 * time.Millisecond) // let start-up garbage settle
	rss, _, err := memKiB(p.pid())
	if err != nil {
		return nil, err
	}
	run.RSSIdleMiB = mib(rss)

	t0 := time.Now()
	w, err := setupWorld(ctx, c, cfg)
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	run.SetupSeconds = time.Since(t0).Seconds()
	if rss, _, err = memKiB(p.pid()); err != nil {
		return nil, err
	}
	run.RSSSetupMiB = mib(rss)

	// Sync, if the server has it: an observer long-polls during the load.
	var obs *observer
	run.Sync = probeSync(ctx, c, w.observer.AccessToken)
	if run.Sync.Implemented {
		if obs, err = startObserver(ctx, c, w.observer.AccessToken); err != nil {
			run.Sync.Error = err.Error()
			obs = nil
		}
	}

	// Sample RSS while the load runs.
	stopSampling := make(chan struct{})
	var peak atomic.Int64
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for range 360_000 { // an hour of samples at most
			if r, _, err := memKiB(p.pid()); err == nil && r > peak.Load() {
				peak.Store(r)
			}
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
		}
	}()

	cpu0, _ := cpuSeconds(p.pid())
	sends, elapsed := sendLoad(ctx, c, w, cfg, idx)
	if cpu1, err := cpuSeconds(p.pid()); err == nil && elapsed > 0 {
		run.ServerCPU = (cpu1 - cpu0) / elapsed.Seconds()
	}
	close(stopSampling)
	sampler.Wait()
	run.RSSPeakMiB = mib(peak.Load())

	var lat []time.Duration
	for _, s := range sends {
		switch {
		case s.err != nil:
			run.SendErrors++
			if run.FirstError == "" {
				run.FirstError = s.err.Error()
			}
		case s.eventID != "":
			run.Sent++
			lat = append(lat, s.latency)
		}
	}
	run.Send = Summarize(lat)
	if elapsed > 0 {
		run.SendPerSecond = float64(run.Sent) / elapsed.Seconds()
	}
	if e := p.exited(); e != nil {
		return nil, e
	}

	if obs != nil {
		obs.finish(sends, 15*time.Second)
		run.Sync.Delivery = obs.report(sends)
	}

	// /messages: backward pages of 100 from each room's end.
	var pages []time.Duration
	for i := 0; i < cfg.Pages; i++ {
		room := w.rooms[i%len(w.rooms)]
		t := time.Now()
		n, err := c.messagesBack(ctx, w.users[0].AccessToken, room, 100)
		if err != nil {
			return nil, err
		}
		pages = append(pages, time.Since(t))
		run.PageEvents = n
	}
	run.MessagesPage = Summarize(pages)

	if run.Sync.Implemented && run.Sync.Error == "" {
		measureInitialSync(ctx, c, w.observer.AccessToken, &run.Sync)
	}
	if _, hwm, err := memKiB(p.pid()); err == nil {
		run.HWMMiB = mib(hwm)
	}
	return run, nil
}

// world is what setup made: users (each joined to every room), the rooms,
// and an observer who is in every room and never sends.
type world struct {
	users    []*session
	observer *session
	rooms    []string
}

func setupWorld(ctx context.Context, c *client, cfg loadConfig) (*world, error) {
	w := &world{users: make([]*session, cfg.Users)}
	names := make([]string, cfg.Users+1)
	for i := range cfg.Users {
		names[i] = fmt.Sprintf("user%03d", i)
	}
	names[cfg.Users] = "observer"
	sessions := make([]*session, len(names))
	if err := parallel(len(names), cfg.Senders, func(i int) error {
		s, err := c.register(ctx, names[i], benchPassword)
		sessions[i] = s
		return err
	}); err != nil {
		return nil, err
	}
	copy(w.users, sessions)
	w.observer = sessions[cfg.Users]
	for i := range cfg.Rooms {
		r, err := c.createRoom(ctx, w.users[0].AccessToken, fmt.Sprintf("bench room %d", i))
		if err != nil {
			return nil, err
		}
		w.rooms = append(w.rooms, r)
	}
	joiners := sessions[1:] // user 0 created the rooms
	if err := parallel(len(joiners), cfg.Senders, func(i int) error {
		for _, r := range w.rooms {
			if err := c.join(ctx, joiners[i].AccessToken, r); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return w, nil
}

// parallel runs f(0..n-1) on at most workers goroutines and returns the
// first error.
func parallel(n, workers int, f func(i int) error) error {
	var next atomic.Int64
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for range max(1, min(workers, n)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// sent is one message of the load.
type sent struct {
	eventID string
	room    string
	done    time.Time // when the send's answer arrived
	latency time.Duration
	err     error
}

// sendLoad sends cfg.Messages messages from cfg.Senders goroutines. Message
// k is sent by user k mod Users into room (k div Users) mod Rooms, so every
// user writes to every room and every room has writers at once.
func sendLoad(ctx context.Context, c *client, w *world, cfg loadConfig, run int) ([]sent, time.Duration) {
	out := make([]sent, cfg.Messages)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range cfg.Senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range cfg.Messages {
				k := int(next.Add(1)) - 1
				if k >= cfg.Messages {
					return
				}
				u := w.users[k%len(w.users)]
				room := w.rooms[(k/len(w.users))%len(w.rooms)]
				t := time.Now()
				eid, err := c.send(ctx, u.AccessToken, room, fmt.Sprintf("r%d-m%d", run, k), fmt.Sprintf("%s%d-%d", benchBody, run, k))
				done := time.Now()
				out[k] = sent{eventID: eid, room: room, done: done, latency: done.Sub(t), err: err}
				if errors.Is(err, context.Canceled) {
					return
				}
			}
		}()
	}
	wg.Wait()
	return out, time.Since(start)
}

// benchBody starts every message body the load sends (the observer counts
// only those).
const benchBody = "bench message "
