package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/cirrus-matrix/cirrus/core/server"
)

// results is everything one `make bench` measured (the JSON file).
type results struct {
	Started    string           `json:"started"`
	Finished   string           `json:"finished"`
	Command    string           `json:"command"`
	Machine    machine          `json:"machine"`
	Load       loadConfig       `json:"load"`
	Runs       []*messageRun    `json:"message_runs"`
	Message    messageSummary   `json:"message_median"`
	FedLoad    fedConfig        `json:"federation_load"`
	FedRuns    []*fedRun        `json:"federation_runs,omitempty"`
	Federation *fedSummary      `json:"federation_median,omitempty"`
	Functions  []functionResult `json:"functions,omitempty"`
	AWS        *awsResult       `json:"aws,omitempty"`
	Cost       []CostReport     `json:"cost,omitempty"`
	Search     *searchResult    `json:"search,omitempty"`
	Targets    []targetRow      `json:"targets"`
	Notes      []string         `json:"notes,omitempty"`
}

type machine struct {
	CPUs     int    `json:"cpus"`
	Model    string `json:"cpu_model"`
	MemoryMB int64  `json:"memory_mib"`
	Kernel   string `json:"kernel"`
	TempFS   string `json:"temp_fs"` // where the embedded store lives during the runs
	Go       string `json:"go"`
	Commit   string `json:"commit"`
	// Load averages at start and end: the machines are shared, and other
	// work running meanwhile shows here.
	LoadStart string `json:"loadavg_start"`
	LoadEnd   string `json:"loadavg_end"`
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func describeMachine(root string) machine {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), LoadStart: loadAvg()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "MemTotal:") {
				fmt.Sscanf(strings.TrimPrefix(line, "MemTotal:"), "%d", &kb)
			}
		}
		m.MemoryMB = kb / 1024
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.TempFS = fsType(os.TempDir())
	// Read-only: which commit the figures belong to.
	if out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
			m.Commit += "+changes"
		}
	}
	return m
}

// fsType is the type of the file system holding path (from /proc/mounts).
func fsType(path string) string {
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return ""
	}
	best, typ := "", ""
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		mp := f[1]
		if (path == mp || strings.HasPrefix(path, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > len(best) {
			best, typ = mp, f[2]
		}
	}
	return typ
}

// messageSummary is the median of the message-path runs.
type messageSummary struct {
	Runs          int       `json:"runs"`
	SendPerSecond float64   `json:"send_events_per_s"`
	SendRuns      []float64 `json:"send_events_per_s_runs"`
	Send          Dist      `json:"send_latency"`
	MessagesPage  Dist      `json:"messages_page_latency"`
	RSSIdleMiB    float64   `json:"rss_idle_mib"`
	RSSSetupMiB   float64   `json:"rss_after_setup_mib"`
	RSSPeakMiB    float64   `json:"rss_peak_load_mib"`
	HWMMiB        float64   `json:"vmhwm_mib"`
	ServerCPU     float64   `json:"server_cpu_cores"`
	Delivered     int       `json:"delivered_events"` // over all runs
	SendErrors    int       `json:"send_errors"`      // over all runs
	Sync          string    `json:"sync_status"`
	Delivery      *Dist     `json:"delivery_latency,omitempty"`
	ExactlyOnce   *bool     `json:"exactly_once,omitempty"` // in every run
	DeliveryNote  string    `json:"delivery_note,omitempty"`
	InitialSync   *Dist     `json:"initial_sync_latency,omitempty"`
	InitialBytes  int       `json:"initial_sync_bytes,omitempty"`
}

func summarizeRuns(runs []*messageRun) messageSummary {
	s := messageSummary{Runs: len(runs)}
	col := func(f func(*messageRun) float64) float64 {
		xs := make([]float64, len(runs))
		for i, r := range runs {
			xs[i] = f(r)
		}
		return Median(xs)
	}
	var sends, pages, deliveries, initial []Dist
	var sizes []float64
	once := true
	var notes []string
	for _, r := range runs {
		s.SendRuns = append(s.SendRuns, r.SendPerSecond)
		sends = append(sends, r.Send)
		pages = append(pages, r.MessagesPage)
		s.SendErrors += r.SendErrors
		if s.Sync == "" || r.Sync.Status != "measured" {
			s.Sync = r.Sync.Status
		}
		if r.Sync.Error != "" {
			notes = append(notes, r.Sync.Error)
		}
		if d := r.Sync.Delivery; d != nil {
			deliveries = append(deliveries, d.Latency)
			s.Delivered += d.Seen
			once = once && d.ExactlyOnce
			if !d.ExactlyOnce {
				notes = append(notes, fmt.Sprintf("acked %d, delivered %d, missing %d, duplicated %d, unknown %d, limited timelines %d",
					d.Acked, d.Seen, d.Missing, d.Dups, d.Unknown, d.Limited))
			}
		}
		if r.Sync.Initial.N > 0 {
			initial = append(initial, r.Sync.Initial)
			sizes = append(sizes, float64(r.Sync.InitialSize))
		}
	}
	s.SendPerSecond = col(func(r *messageRun) float64 { return r.SendPerSecond })
	s.Send = MedianDist(sends)
	s.MessagesPage = MedianDist(pages)
	s.RSSIdleMiB = col(func(r *messageRun) float64 { return r.RSSIdleMiB })
	s.RSSSetupMiB = col(func(r *messageRun) float64 { return r.RSSSetupMiB })
	s.RSSPeakMiB = col(func(r *messageRun) float64 { return r.RSSPeakMiB })
	s.HWMMiB = col(func(r *messageRun) float64 { return r.HWMMiB })
	s.ServerCPU = col(func(r *messageRun) float64 { return r.ServerCPU })
	if len(deliveries) > 0 {
		d := MedianDist(deliveries)
		s.Delivery = &d
		s.ExactlyOnce = &once
	}
	if len(initial) > 0 {
		d := MedianDist(initial)
		s.InitialSync = &d
		s.InitialBytes = int(Median(sizes))
	}
	s.DeliveryNote = strings.Join(notes, "; ")
	return s
}

// costReports turns the AWS path's counts into the cost model's inputs and
// prices both workloads.
func costReports(a *awsResult, workers []string) []CostReport {
	in := CostInputs{QueueWorkers: workers}
	conv := func(name string) *OpCounts {
		oc := a.op(name)
		if oc == nil {
			return nil
		}
		return &OpCounts{Calls: oc.Reads + oc.Writes, RRU: oc.RCU, WRU: oc.WCU, SQS: oc.SQS, S3Puts: oc.S3Puts, S3Gets: oc.S3Gets, WallMS: oc.WallMS}
	}
	// Sends cost more in bigger rooms: price them in a room the size of
	// the community.
	in.Send = conv(opSendBig)
	if in.Send == nil {
		in.Send = conv(opSend)
	}
	in.SyncWake = conv(opSyncWake)
	in.SyncIdle = conv(opSyncIdle)
	in.SyncHeld = conv(opSyncHeld)
	in.Upload = conv(opUpload)
	in.Receipt = conv(opReceipt)
	in.Typing = conv(opTyping)
	in.FedOut, in.FedIn, in.LocalSend = conv(opFedOut), conv(opFedIn), conv(opSend)
	in.Fanout = conv(opFanoutBig)
	in.Download = conv(opDownload)
	withOrigin := DefaultParams
	withOrigin.SyncOrigin = true
	return []CostReport{
		Cost(ReferenceCommunity, in, PriceTable, DefaultParams),
		Cost(ReferenceCommunity, in, PriceTable, withOrigin),
		Cost(IdleServer, in, PriceTable, DefaultParams),
	}
}

// targetRow is one of issue 8's targets against what was measured.
type targetRow struct {
	Target   string `json:"target"`
	Measured string `json:"measured"`
	Verdict  string `json:"verdict"` // met, missed by …, n/a …
}

func verdict(ok bool, gap string) string {
	if ok {
		return "met"
	}
	return "missed: " + gap
}

// atLeast and atMost phrase the gap to a target.
func atLeast(v, target float64) string {
	return verdict(v >= target, fmt.Sprintf("%.0f%% below", 100*(target-v)/target))
}

func atMost(v, target float64) string {
	if target == 0 {
		return verdict(v <= target, fmt.Sprintf("%.2g over", v))
	}
	return verdict(v <= target, fmt.Sprintf("%.1f× the target", v/target))
}

func messageTargets(m messageSummary) []targetRow {
	var t []targetRow
	t = append(t, targetRow{"send throughput ≥ 2,500 events/s", fmt.Sprintf("%.0f events/s", m.SendPerSecond), atLeast(m.SendPerSecond, 2500)})
	if m.Delivery != nil {
		t = append(t, targetRow{"delivery latency p50 ≤ 5 ms", fmt.Sprintf("%.2f ms", m.Delivery.P50), atMost(m.Delivery.P50, 5)})
		ok := m.ExactlyOnce != nil && *m.ExactlyOnce
		t = append(t, targetRow{"every event delivered exactly once", fmt.Sprint(ok), verdict(ok, m.DeliveryNote)})
	} else {
		t = append(t, targetRow{"delivery latency p50 ≤ 5 ms", m.Sync, "n/a"},
			targetRow{"every event delivered exactly once", m.Sync, "n/a"})
	}
	t = append(t, targetRow{"RSS idle ≤ 20 MiB", fmt.Sprintf("%.1f MiB", m.RSSIdleMiB), atMost(m.RSSIdleMiB, 20)})
	t = append(t, targetRow{"RSS peak ≤ 64 MiB", fmt.Sprintf("%.1f MiB", m.HWMMiB), atMost(m.HWMMiB, 64)})
	return t
}

func evaluateTargets(r *results) []targetRow {
	var t []targetRow
	if r.Message.Runs > 0 {
		t = messageTargets(r.Message)
	}
	if len(r.Functions) > 0 {
		worst, name := 0.0, ""
		errs := 0
		for _, f := range r.Functions {
			if f.Skipped != "" {
				continue
			}
			if f.Error != "" {
				errs++
				continue
			}
			if f.Median > worst {
				worst, name = f.Median, f.Dir+" ("+f.Mode+")"
			}
		}
		v := atMost(worst, 20)
		if errs > 0 {
			v += fmt.Sprintf(" (%d failed)", errs)
		}
		t = append(t, targetRow{"cold start ≤ 20 ms, each function", fmt.Sprintf("slowest %.1f ms: %s", worst, name), v})
	}
	if r.AWS != nil {
		if s := r.AWS.op(opSend); s != nil {
			t = append(t, targetRow{"≤ 3 DynamoDB write calls per send", fmt.Sprintf("%.2f", s.Writes), atMost(s.Writes, 3)})
			t = append(t, targetRow{"≤ 4 DynamoDB read calls per send", fmt.Sprintf("%.2f", s.Reads), atMost(s.Reads, 4)})
		}
		if w := r.AWS.op(opSyncWake); w != nil {
			t = append(t, targetRow{"≤ 2 reads per idle sync wake-up", fmt.Sprintf("%.2f", w.Reads), atMost(w.Reads, 2)})
		} else {
			t = append(t, targetRow{"≤ 2 reads per idle sync wake-up", notImplemented, "n/a"})
		}
	}
	for _, c := range r.Cost {
		if c.Workload.Name != ReferenceCommunity.Name {
			continue
		}
		v := atMost(c.Total, 5)
		if !c.Complete {
			v += " (lower bound: parts not measured yet)"
		}
		name := "reference community ≤ $5/month"
		if c.Params.SyncOrigin {
			name += ", long-polls on a sync origin host"
		}
		t = append(t, targetRow{name, fmt.Sprintf("$%.2f", c.Total), v})
	}
	return t
}

func printReport(w io.Writer, r *results) {
	m := r.Machine
	fmt.Fprintf(w, "\nCirrus benchmarks — %s\n", r.Finished)
	fmt.Fprintf(w, "machine: %d CPUs, %s, %d MiB, kernel %s, temp fs %s, %s, commit %s\n", m.CPUs, m.Model, m.MemoryMB, m.Kernel, m.TempFS, m.Go, m.Commit)
	fmt.Fprintf(w, "load average: %s at start, %s at end (other work on the machine skews timings)\n", m.LoadStart, m.LoadEnd)
	fmt.Fprintf(w, "load: %d users, %d rooms, %d messages, %d senders; %d runs, medians shown\n\n",
		r.Load.Users, r.Load.Rooms, r.Load.Messages, r.Load.Senders, r.Message.Runs)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(cols ...string) { fmt.Fprintln(tw, strings.Join(cols, "\t")) }
	if r.Message.Runs > 0 {
		printMessage(row, r.Message)
	}
	if f := r.Federation; f != nil {
		row("FEDERATION (two all-in-one processes, HTTPS on loopback)", "", "")
		row(fmt.Sprintf("  delivery A → B (send returns → /sync on B), %d messages, one every %v, p50 / p95 / p99", r.FedLoad.Messages, r.FedLoad.Interval), fmt.Sprintf("%.2f / %.2f / %.2f ms", f.Delivery.P50, f.Delivery.P95, f.Delivery.P99), fmt.Sprintf("exactly once: %v", f.ExactlyOnce))
		row(fmt.Sprintf("  catch-up: B restarted after %d messages sent while it was down", r.FedLoad.CatchUp), fmt.Sprintf("%.2f s", f.CatchUpSeconds), "B up → all delivered to bob's /sync")
		for _, fr := range r.FedRuns {
			if fr.Error != "" {
				row("  error: "+fr.Error, "", "")
			}
		}
		row("", "", "")
	}
	if r.Search != nil {
		printSearch(row, r.Search)
	}
	if len(r.Functions) > 0 {
		row("FUNCTIONS (host build, stripped)", "size", "cold start median: exec → first response (→ ready for events); runs")
		for _, f := range r.Functions {
			v := fmt.Sprintf("%.1f ms  %s", f.Median, runsList(f.Runs))
			if f.InitMedian > 0 {
				v = fmt.Sprintf("%.1f ms (%.1f ms)  %s", f.Median, f.InitMedian, runsList(f.Runs))
			}
			if f.Error != "" {
				v = "error: " + firstLine(f.Error)
			}
			if f.Skipped != "" {
				v = f.Skipped
			}
			row(fmt.Sprintf("  %s [%s] %s", f.Dir, f.Mode, f.Probe), fmt.Sprintf("%.1f MiB", float64(f.Bytes)/(1<<20)), v)
		}
		row("", "", "")
	}
	if r.AWS != nil {
		row("AWS PATH (per operation)", "DynamoDB reads / writes (RCU / WCU)", "calls by API; SQS, S3")
		for _, o := range r.AWS.Ops {
			row("  "+o.Op, fmt.Sprintf("%.2f / %.2f  (%.2f / %.2f)", o.Reads, o.Writes, o.RCU, o.WCU), fmt.Sprintf("%s; sqs %.2f, s3 %.2f", callsString(o.Calls), o.SQS, o.S3Puts+o.S3Gets))
		}
		for _, n := range r.AWS.Notes {
			row("  "+n, "", "")
		}
		row("", "", "")
	}
	for _, c := range r.Cost {
		name := c.Workload.Name
		if c.Params.SyncOrigin {
			name += ", long-polls on a sync origin host"
		}
		row(fmt.Sprintf("COST: %s ($/month)", name), fmt.Sprintf("$%.2f", c.Total), costCaption(c))
		for _, l := range c.Lines {
			v := fmt.Sprintf("$%.2f", l.Total)
			if l.Status == StatusNotMeasured || l.Status == StatusNoRate {
				v = "—"
			}
			row("  "+l.Item, v, fmt.Sprintf("%s; %s", l.Status, costParts(c, l)))
		}
		row("", "", "")
	}
	row("TARGETS (issue 8)", "measured", "verdict")
	for _, t := range r.Targets {
		row("  "+t.Target, t.Measured, t.Verdict)
	}
	tw.Flush()
	for _, n := range r.Notes {
		fmt.Fprintln(w, "note:", n)
	}
	if len(r.Cost) > 0 {
		p := r.Cost[0].Prices
		fmt.Fprintf(w, "prices (%s): %s\n", p.Date, p.Source)
		fmt.Fprintln(w, "not in the cost model: storage (DynamoDB, S3), CloudWatch Logs, data transfer, cold-start init time")
	}
}

func printMessage(row func(...string), s messageSummary) {
	row("MESSAGE PATH (all-in-one, embedded store, HTTP)", "", "")
	row("  send throughput", fmt.Sprintf("%.0f events/s", s.SendPerSecond), runsList(s.SendRuns))
	row("  send latency p50 / p95 / p99", distString(s.Send), fmt.Sprintf("errors: %d", s.SendErrors))
	row("  server CPU during the load", fmt.Sprintf("%.2f cores", s.ServerCPU), "")
	row("  /messages backward page of 100, p50 / p95 / p99", distString(s.MessagesPage), "")
	if s.Delivery != nil {
		row("  delivery latency (send → /sync) p50 / p95 / p99", distString(*s.Delivery), fmt.Sprintf("exactly once: %v (%d events in all runs)", *s.ExactlyOnce, s.Delivered))
	} else {
		row("  delivery latency (send → /sync)", s.Sync, "")
	}
	if s.InitialSync != nil {
		row("  initial /sync (user in every room), p50", fmt.Sprintf("%.1f ms, %d bytes", s.InitialSync.P50, s.InitialBytes), "")
	} else {
		row("  initial /sync", s.Sync, "")
	}
	row("  RSS idle / after setup / peak in load (VmHWM)", fmt.Sprintf("%.1f / %.1f / %.1f (%.1f) MiB", s.RSSIdleMiB, s.RSSSetupMiB, s.RSSPeakMiB, s.HWMMiB), "")
	row("", "", "")
}

func costCaption(c CostReport) string {
	if c.Complete {
		return "complete"
	}
	return "lower bound: lines marked — are not measured or have no rate yet"
}

func costParts(c CostReport, l CostLine) string {
	if l.Status == StatusNotMeasured || l.Status == StatusNoRate {
		return l.Basis
	}
	var parts []string
	add := func(name string, v float64) {
		if v >= 0.005 {
			parts = append(parts, fmt.Sprintf("%s $%.2f", name, v))
		}
	}
	add("Lambda", l.Lambda)
	add("HTTP API", l.HTTPAPI)
	add("DynamoDB", l.Dynamo)
	add("SQS", l.Queue)
	add("S3", l.Storage)
	add("host", l.Host)
	s := strings.Join(parts, ", ")
	if s == "" {
		s = "$0.00"
	}
	if c.Total > 0 {
		s += fmt.Sprintf(" (%.0f%%)", c.Share(l))
	}
	return s
}

func distString(d Dist) string {
	return fmt.Sprintf("%.2f / %.2f / %.2f ms", d.P50, d.P95, d.P99)
}

func runsList(xs []float64) string {
	var p []string
	for _, x := range xs {
		p = append(p, fmt.Sprintf("%.0f", x))
	}
	if len(xs) > 0 && xs[0] < 100 {
		p = p[:0]
		for _, x := range xs {
			p = append(p, fmt.Sprintf("%.1f", x))
		}
	}
	return "runs: " + strings.Join(p, ", ")
}

func callsString(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var p []string
	for _, k := range keys {
		if m[k] != 0 {
			p = append(p, fmt.Sprintf("%s %.2f", k, m[k]))
		}
	}
	if len(p) == 0 {
		return "none"
	}
	return strings.Join(p, ", ")
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// queueWorkers are the function directories that serve no route (and are
// not the all-in-one): SQS workers.
func queueWorkers(dirs []string) []string {
	routed := map[string]bool{}
	for _, fn := range server.Functions() {
		routed[fn] = true
	}
	var out []string
	for _, d := range dirs {
		if d != "homeserver" && !routed[camel(d)] {
			out = append(out, d)
		}
	}
	return out
}
