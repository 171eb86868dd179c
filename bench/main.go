// Command bench is Cirrus's benchmark harness (`make bench`): it builds the
// functions, starts what it measures itself, and prints one table of
// figures against the targets of issue 8, writing the same as JSON.
//
//   - message path: the all-in-one (functions/homeserver) as a separate
//     process on the embedded store, driven over HTTP on loopback: send
//     throughput and latency, /messages, memory, and — once the server has
//     /sync — delivery latency, exactly-once delivery and initial sync;
//   - per function: binary size and cold start (exec → first response), the
//     Lambda functions against a fake Lambda Runtime API and the local AWS
//     stand-ins;
//   - AWS path: the all-in-one built inside this process on the AWS adapters,
//     whose counters give DynamoDB calls and capacity, SQS and S3 requests
//     per operation;
//   - cost model: those counts priced for a reference community and for an
//     idle server.
//
// It lives in bench/ (not functions/, where every directory is a deployed
// Lambda, nor internal/, which holds libraries): it is a tool that starts
// processes and prints a report, and its results sit next to it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

type options struct {
	load       loadConfig
	fed        fedConfig
	skipFed    bool
	runs       int
	coldRuns   int
	out        string
	skipAWS    bool
	skipCold   bool
	skipMsg    bool
	skipSearch bool
	searchMsgs int
	keep       bool
	cpuProfile string
}

func main() {
	var o options
	flag.IntVar(&o.load.Users, "users", 20, "users registered (each joins every room)")
	flag.IntVar(&o.load.Rooms, "rooms", 5, "rooms created")
	flag.IntVar(&o.load.Messages, "messages", 2000, "messages sent per run")
	flag.IntVar(&o.load.Senders, "senders", 8, "concurrent senders")
	flag.IntVar(&o.load.Pages, "pages", 20, "/messages pages of 100 timed after each run")
	flag.IntVar(&o.fed.Messages, "fed-messages", 200, "federation path: messages sent one at a time from server A to a user on server B")
	flag.IntVar(&o.fed.CatchUp, "fed-catch-up", 100, "federation path: messages sent while B is down")
	flag.DurationVar(&o.fed.Interval, "fed-interval", 20*time.Millisecond, "federation path: one message every interval (0: back to back)")
	flag.BoolVar(&o.skipFed, "skip-federation", false, "skip the federation path (two all-in-one processes)")
	flag.IntVar(&o.runs, "runs", 3, "message-path runs (medians are reported)")
	flag.IntVar(&o.coldRuns, "cold-runs", 7, "cold starts per function (median reported)")
	flag.StringVar(&o.out, "out", "bench/results/latest.json", "JSON results file ('' for none)")
	flag.BoolVar(&o.skipAWS, "skip-aws", false, "skip everything that needs the AWS stand-ins (AWS path, Lambda cold starts, cost model)")
	flag.BoolVar(&o.skipCold, "skip-cold", false, "skip binary sizes and cold starts")
	flag.BoolVar(&o.skipMsg, "skip-message", false, "skip the message path (the all-in-one on the embedded store)")
	flag.BoolVar(&o.skipSearch, "skip-search", false, "skip the search index measurement (bench/search.go)")
	flag.IntVar(&o.searchMsgs, "search-messages", 100_000, "messages in the search benchmark's index")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (server logs, data) and print its path")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "instead of the benchmarks: run the message load against an in-process server and write its CPU profile here")
	flag.Parse()
	if o.load.Users < 2 || o.load.Rooms < 1 || o.load.Messages < 1 || o.load.Senders < 1 || o.runs < 1 || o.coldRuns < 1 {
		fmt.Fprintln(os.Stderr, "bench: -users ≥ 2, -rooms, -messages, -senders, -runs and -cold-runs ≥ 1")
		os.Exit(2)
	}

	// However the harness ends, stop what it started. A closed output pipe
	// (`make bench | head`) must not kill it before it has: writes then fail
	// instead.
	signal.Ignore(syscall.SIGPIPE)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		interrupted.Store(true)
		fmt.Fprintf(os.Stderr, "bench: %v: stopping what was started\n", s)
		atExit.run()
		os.Exit(130)
	}()
	code := 0
	func() {
		defer func() {
			if p := recover(); p != nil {
				fmt.Fprintln(os.Stderr, "bench: panic:", p)
				code = 1
			}
			atExit.run()
		}()
		if err := run(o); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			code = 1
		}
	}()
	os.Exit(code)
}

// interrupted is set by a signal: whatever main is doing then, it must not
// report figures from a run whose processes were stopped under it.
var interrupted atomic.Bool

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func run(o options) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "cirrus-bench-")
	if err != nil {
		return err
	}
	if o.keep {
		logf("work directory: %s", work)
	} else {
		atExit.add(func() { os.RemoveAll(work) })
	}
	if o.cpuProfile != "" {
		return profileSend(ctx, o, work)
	}

	res := &results{Started: time.Now().UTC().Format(time.RFC3339), Command: commandLine(), Machine: describeMachine(root), Load: o.load}
	logf("building functions/* for this machine")
	binDir := filepath.Join(work, "bin")
	dirs, err := buildFunctions(ctx, root, binDir)
	if err != nil {
		return err
	}

	for i := range o.runs {
		if o.skipMsg {
			res.Notes = append(res.Notes, "message path skipped (-skip-message)")
			break
		}
		logf("message path, run %d of %d: %d users, %d rooms, %d messages, %d senders", i+1, o.runs, o.load.Users, o.load.Rooms, o.load.Messages, o.load.Senders)
		r, err := runMessagePath(ctx, filepath.Join(binDir, "homeserver"), work, o.load, i)
		if err != nil {
			return fmt.Errorf("message path run %d: %w", i+1, err)
		}
		logf("  %.0f events/s, send p50 %.2f ms, sync: %s", r.SendPerSecond, r.Send.P50, r.Sync.Status)
		res.Runs = append(res.Runs, r)
	}
	if len(res.Runs) > 0 {
		res.Message = summarizeRuns(res.Runs)
	}
	for i := range o.runs {
		if o.skipFed {
			res.Notes = append(res.Notes, "federation path skipped (-skip-federation)")
			break
		}
		logf("federation path, run %d of %d: %d messages A → B, then %d while B is down", i+1, o.runs, o.fed.Messages, o.fed.CatchUp)
		r, err := runFederationPath(ctx, filepath.Join(binDir, "homeserver"), work, o.fed, i)
		if err != nil {
			return fmt.Errorf("federation path run %d: %w", i+1, err)
		}
		logf("  delivery p50 %.2f ms, catch-up %.2f s", r.Delivery.Latency.P50, r.CatchUpSeconds)
		res.FedRuns = append(res.FedRuns, r)
	}
	res.Federation = summarizeFederation(res.FedRuns)
	res.FedLoad = o.fed

	var aws *awsEnv
	if o.skipAWS {
		res.Notes = append(res.Notes, "AWS path, Lambda cold starts and cost model skipped (-skip-aws)")
	} else {
		logf("starting the AWS stand-ins (scripts/standins/standins.sh)")
		if _, err := startStandins(root, filepath.Join(work, "standins")); err != nil {
			return err
		}
		if aws, err = startAWSEnv(ctx, work); err != nil {
			return err
		}
		logf("AWS path: counting calls per operation")
		if res.AWS, err = runAWSPath(ctx, aws); err != nil {
			return fmt.Errorf("AWS path: %w", err)
		}
		logf("AWS path: federation with an embedded peer")
		if err := measureAWSFederation(ctx, work, res.AWS); err != nil {
			res.AWS.Notes = append(res.AWS.Notes, "federation: "+err.Error())
		}
		res.Cost = costReports(res.AWS, queueWorkers(dirs))
	}
	if !o.skipCold {
		logf("binary sizes and cold starts (%d runs each)", o.coldRuns)
		if aws != nil && aws.alice == nil {
			return fmt.Errorf("cold starts need the AWS path's user and room")
		}
		res.Functions = runFunctions(ctx, binDir, dirs, aws, o.coldRuns, work)
		if aws != nil {
			res.Notes = append(res.Notes, aws.notes...)
		}
	}
	if o.skipSearch {
		res.Notes = append(res.Notes, "search skipped (-skip-search)")
	} else {
		logf("search: indexing %d messages, then timing queries", o.searchMsgs)
		if res.Search, err = runSearch(ctx, work, o.searchMsgs, 20); err != nil {
			return fmt.Errorf("search: %w", err)
		}
	}
	if interrupted.Load() {
		return fmt.Errorf("interrupted: no results")
	}
	res.Finished = time.Now().UTC().Format(time.RFC3339)
	res.Machine.LoadEnd = loadAvg()
	res.Targets = evaluateTargets(res)
	printReport(os.Stdout, res)
	if o.out != "" {
		path := o.out
		if !filepath.IsAbs(path) {
			path = filepath.Join(root, path)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			return err
		}
		logf("wrote %s", path)
	}
	return nil
}

func commandLine() string {
	args := []string{"go run ./bench"}
	args = append(args, os.Args[1:]...)
	return strings.Join(args, " ")
}
