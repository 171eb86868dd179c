package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// cleanups run in reverse order when the harness ends, however it ends
// (normal return, error, panic in main, SIGINT/SIGTERM/SIGHUP): every
// process the harness starts is registered here and stopped by its PID.
// run may be called from main and from the signal handler at once: the
// second caller waits until the first has finished, and anything added
// after that runs at once.
type cleanups struct {
	mu    sync.Mutex
	funcs []func()
	done  bool
	once  sync.Once
}

func (c *cleanups) add(f func()) {
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		f()
		return
	}
	c.funcs = append(c.funcs, f)
	c.mu.Unlock()
}

func (c *cleanups) run() {
	c.once.Do(func() {
		for range 100 { // cleanups that register cleanups: a few rounds at most
			c.mu.Lock()
			fs := c.funcs
			c.funcs = nil
			if len(fs) == 0 {
				c.done = true
				c.mu.Unlock()
				return
			}
			c.mu.Unlock()
			for i := len(fs) - 1; i >= 0; i-- {
				fs[i]()
			}
		}
	})
}

var atExit cleanups

// proc is a child process started by the harness.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	err  error
	once sync.Once
	// started is taken just before exec: cold starts are timed from it.
	started time.Time
}

// startProc starts bin with exactly env (nothing inherited), logging its
// output to logPath, and registers it to be stopped at exit.
func startProc(name, bin string, env []string, logPath string) (*proc, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = lf, lf
	started := time.Now()
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: lf, done: make(chan struct{}), started: started}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	atExit.add(p.stop)
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended (with its log's tail).
func (p *proc) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited (%v); log:\n%s", p.name, p.err, tail(p.log.Name(), 20))
	default:
		return nil
	}
}

// stop ends the process by its PID: SIGTERM, then SIGKILL after 3 s.
func (p *proc) stop() {
	p.once.Do(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(3 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.done
			}
		}
		p.log.Close()
	})
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// memKiB reads VmRSS and VmHWM (peak RSS) of a process from /proc, in KiB.
func memKiB(pid int) (rss, hwm int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/status %s: %w", pid, k, err)
		}
		if k == "VmRSS" {
			rss = n
		} else {
			hwm = n
		}
	}
	if rss == 0 {
		return 0, 0, errors.New("no VmRSS in /proc status (not Linux?)")
	}
	return rss, hwm, sc.Err()
}

func mib(kib int64) float64 { return float64(kib) / 1024 }

// cpuSeconds is the user+system CPU time a process has used, from
// /proc/<pid>/stat (in clock ticks of 1/100 s, Linux's USER_HZ).
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: count from after its ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	// utime and stime are fields 14 and 15 of the line: 12 and 13 after ')'.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad times", pid)
	}
	return float64(ut+st) / 100, nil
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// baseEnv is the environment children start from: the parent's, minus every
// CIRRUS_ and AWS_ variable (each run states its own).
func baseEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "CIRRUS_") || strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "_LAMBDA") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

func envList(base []string, vars map[string]string) []string {
	out := append([]string(nil), base...)
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, k+"="+vars[k])
	}
	return out
}

// buildFunctions builds every functions/<name> for this machine with the
// flags build.mk uses for Lambda (stripped, lambda.norpc), into dir, and
// returns the function directory names.
func buildFunctions(ctx context.Context, root, dir string) ([]string, error) {
	mains, err := filepath.Glob(filepath.Join(root, "functions", "*", "main.go"))
	if err != nil || len(mains) == 0 {
		return nil, fmt.Errorf("no functions/*/main.go under %s", root)
	}
	var names []string
	for _, m := range mains {
		names = append(names, filepath.Base(filepath.Dir(m)))
	}
	sort.Strings(names)
	cmd := exec.CommandContext(ctx, goCmd(), "build", "-tags", "lambda.norpc", "-trimpath", "-ldflags=-s -w",
		"-o", dir+string(filepath.Separator), "./functions/...")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ./functions/...: %v\n%s", err, out)
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			return nil, fmt.Errorf("build produced no %s: %w", n, err)
		}
	}
	return names, nil
}

func goCmd() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}

// moduleRoot is the directory of the go.mod above the working directory.
func moduleRoot() (string, error) {
	out, err := exec.Command(goCmd(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run the harness inside the Cirrus module (make bench)")
	}
	return filepath.Dir(mod), nil
}

// startStandins starts the DynamoDB and SQS stand-ins with
// scripts/standins/standins.sh on free ports and a run directory of the
// harness's own (so a `make test` running meanwhile is not disturbed), sets
// the AWS_* variables it prints in this process, and registers the stop.
func startStandins(root, runDir string) (map[string]string, error) {
	script := filepath.Join(root, "scripts", "standins", "standins.sh")
	dyn, err := freePort()
	if err != nil {
		return nil, err
	}
	sqs, err := freePort()
	if err != nil {
		return nil, err
	}
	env := append(os.Environ(), "STANDINS_RUN_DIR="+runDir,
		fmt.Sprintf("STANDINS_DYNAMODB_PORT=%d", dyn), fmt.Sprintf("STANDINS_SQS_PORT=%d", sqs))
	stop := func() {
		cmd := exec.Command(script, "stop")
		cmd.Env = env
		_ = cmd.Run()
	}
	atExit.add(stop) // before start: a start that fails half-way is stopped too
	cmd := exec.Command(script, "start")
	cmd.Env = env
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("standins.sh start: %w", err)
	}
	vars := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "export "))
		if k, v, ok := strings.Cut(line, "="); ok {
			vars[k] = v
			os.Setenv(k, v)
		}
	}
	if vars["AWS_ENDPOINT_URL_DYNAMODB"] == "" || vars["AWS_ENDPOINT_URL_SQS"] == "" {
		return nil, fmt.Errorf("standins.sh start printed no endpoints: %q", out)
	}
	return vars, nil
}
