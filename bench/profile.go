package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"

	"github.com/cirrus-matrix/cirrus/infra/app"
	"github.com/cirrus-matrix/cirrus/infra/config"
)

// profileSend runs the message load against the all-in-one built inside
// this process (the same app.Build and handler functions/homeserver runs)
// and writes a CPU profile of the load phase only. The profile holds the
// load generator's goroutines too; the server's share is everything under
// net/http.(*conn).serve.
func profileSend(ctx context.Context, o options, work string) error {
	vars := map[string]string{
		"CIRRUS_SERVER_NAME":  "bench.test",
		"CIRRUS_DATA_DIR":     filepath.Join(work, "profile"),
		"CIRRUS_REGISTRATION": "open",
		"CIRRUS_RATE_LIMITS":  "false",
		"CIRRUS_BCRYPT_COST":  "4",
		"CIRRUS_LOG_LEVEL":    "error",
	}
	cfg, err := config.Load(func(k string) string { return vars[k] })
	if err != nil {
		return err
	}
	a, err := app.Build(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
	}
	defer a.Close()
	srv := httptest.NewServer(a.Server.Handler())
	defer srv.Close()
	c := newClient(srv.URL, o.load.Senders+4)
	defer c.close()
	w, err := setupWorld(ctx, c, o.load)
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	// A syncing observer, as in the message path, so /sync's share shows.
	var obs *observer
	if probeSync(ctx, c, w.observer.AccessToken).Implemented {
		if obs, err = startObserver(ctx, c, w.observer.AccessToken); err != nil {
			return err
		}
	}
	f, err := os.Create(o.cpuProfile)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	sends, elapsed := sendLoad(ctx, c, w, o.load, 0)
	if obs != nil {
		obs.finish(sends, 15*time.Second)
	}
	pprof.StopCPUProfile()
	if obs != nil {
		d := obs.report(sends)
		fmt.Printf("delivery: p50 %.2f ms, p99 %.2f ms, exactly once %v\n", d.Latency.P50, d.Latency.P99, d.ExactlyOnce)
	}
	var lat []float64
	errs := 0
	for _, s := range sends {
		if s.err != nil {
			errs++
			continue
		}
		lat = append(lat, ms(s.latency))
	}
	fmt.Printf("in-process: %d messages in %.2f s = %.0f events/s, send p50 %.2f ms, %d errors\n",
		len(lat), elapsed.Seconds(), float64(len(lat))/elapsed.Seconds(), Percentile(lat, 50), errs)
	fmt.Printf("profile: %s\n  go tool pprof -top -focus 'net/http.\\(\\*conn\\).serve' %s\n", o.cpuProfile, o.cpuProfile)
	return nil
}
