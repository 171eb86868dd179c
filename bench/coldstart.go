package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/server"
)

// functionResult is one functions/* binary: its size and cold starts.
type functionResult struct {
	Dir      string    `json:"dir"`
	Function string    `json:"function"` // route-table name, or "all-in-one"
	Mode     string    `json:"mode"`     // how it was started and probed
	Bytes    int64     `json:"binary_bytes"`
	Probe    string    `json:"probe"`
	Runs     []float64 `json:"cold_start_ms"`
	Median   float64   `json:"cold_start_median_ms"`
	// Init is exec → the runtime's first /next call (the function built
	// and ready, before its first request); Lambda functions only.
	InitRuns   []float64 `json:"init_ms,omitempty"`
	InitMedian float64   `json:"init_median_ms,omitempty"`
	Error      string    `json:"error,omitempty"`
	Skipped    string    `json:"skipped,omitempty"`
}

// camel turns a function directory name into its route-table name, as
// build.mk does: client-send → ClientSend.
func camel(dir string) string {
	var b strings.Builder
	for _, w := range strings.Split(dir, "-") {
		if w != "" {
			b.WriteString(strings.ToUpper(w[:1]) + w[1:])
		}
	}
	return b.String()
}

// probeRequest is the one request a cold start is timed to: an HTTP
// request (as an API Gateway payload 2.0 event) or, for a worker with no
// routes, an empty SQS batch.
type probeRequest struct {
	Method, Path, Query string
	Auth                bool
	Body                []byte
	SQS                 bool
	// Expect is the status that counts as an answer (0: any 2xx).
	Expect int
	// Label names the probe in the report ({roomId} for the room's id).
	Label string
}

// fixture is what probes refer to: a user (whose token authenticates) and
// a room they are in.
type fixture struct {
	user, room string
	since      string // a /sync token of the user ("" without /sync)
}

// probeFor picks the request that times function fn's cold start: a typical
// request of that function where one is named here, else the function's
// first GET route without path parameters from the route table, else (a
// function without routes is a queue worker) an empty SQS batch. A new
// function is probed without an edit here; name a better probe when the
// fallback is not typical.
func probeFor(fn string, fx fixture, run int) (probeRequest, error) {
	const c = "/_matrix/client/v3"
	get := func(path string, auth bool) probeRequest {
		return probeRequest{Method: http.MethodGet, Path: path, Auth: auth, Label: "GET " + path}
	}
	rooms := c + "/rooms/" + url.PathEscape(fx.room)
	switch fn {
	case "ClientDiscovery":
		return get("/_matrix/client/versions", false), nil
	case "ClientAuth":
		return get(c+"/account/whoami", true), nil
	case "ClientAccount":
		return get(c+"/devices", true), nil
	case "ClientRooms":
		return get(c+"/joined_rooms", true), nil
	case "ClientSend":
		return probeRequest{Method: http.MethodPut, Path: rooms + "/send/m.room.message/cold-" + strconv.Itoa(run),
			Auth: true, Body: []byte(`{"msgtype":"m.text","body":"cold start"}`),
			Label: "PUT /rooms/{roomId}/send/m.room.message/{txnId}"}, nil
	case "ClientTimeline":
		return probeRequest{Method: http.MethodGet, Path: rooms + "/messages", Query: "dir=b&limit=10", Auth: true,
			Label: "GET /rooms/{roomId}/messages?dir=b&limit=10"}, nil
	case "ClientKeys":
		return probeRequest{Method: http.MethodPost, Path: c + "/keys/query", Auth: true,
			Body: []byte(`{"device_keys":{"@alice:bench.test":[]}}`), Label: "POST " + c + "/keys/query"}, nil
	case "Media":
		return get("/_matrix/client/v1/media/config", true), nil
	case "ClientSync":
		if fx.since == "" {
			return probeRequest{Method: http.MethodGet, Path: c + "/sync", Query: "timeout=0", Auth: true, Label: "GET /sync?timeout=0 (initial)"}, nil
		}
		return probeRequest{Method: http.MethodGet, Path: c + "/sync", Query: "timeout=0&since=" + url.QueryEscape(fx.since), Auth: true,
			Label: "GET /sync?since={token}&timeout=0"}, nil
	case "ClientUserData":
		return probeRequest{Method: http.MethodPost, Path: c + "/user/" + url.PathEscape(fx.user) + "/filter", Auth: true,
			Body: []byte(`{"room":{"timeline":{"limit":10}}}`), Label: "POST /user/{userId}/filter"}, nil
	case "Federation":
		return get("/_matrix/federation/v1/version", false), nil
	case "FederationSend":
		// A transaction needs a request signed by a remote server's key,
		// which the harness has not got: the refusal is still one whole
		// request through the function.
		return probeRequest{Method: http.MethodPut, Path: "/_matrix/federation/v1/send/cold-" + strconv.Itoa(run),
			Body: []byte(`{"origin":"remote.test","origin_server_ts":0,"pdus":[]}`), Expect: http.StatusUnauthorized,
			Label: "PUT /_matrix/federation/v1/send/{txnId} unsigned (401 expected)"}, nil
	}
	routed := false
	for _, r := range server.RouteTable() {
		if r.Function != fn {
			continue
		}
		routed = true
		if r.Method == http.MethodGet && !strings.Contains(r.Path, "{") {
			return get(r.Path, r.Auth == httpapi.AuthRequired), nil
		}
	}
	if !routed {
		return probeRequest{SQS: true, Body: []byte(`{"Records":[]}`), Label: "empty SQS batch"}, nil
	}
	return probeRequest{}, fmt.Errorf("no probe request for function %s (add one to probeFor)", fn)
}

// apiEvent is the Lambda event for a probe: an API Gateway HTTP API
// (payload 2.0) event, or the probe's body for a queue worker.
func apiEvent(p probeRequest, token string) ([]byte, error) {
	if p.SQS {
		return p.Body, nil
	}
	ev := events.APIGatewayV2HTTPRequest{
		Version:        "2.0",
		RouteKey:       "$default",
		RawPath:        p.Path,
		RawQueryString: p.Query,
		Headers:        map[string]string{"host": "bench.test", "user-agent": "cirrus-bench"},
		RequestContext: events.APIGatewayV2HTTPRequestContext{
			RequestID:  "bench",
			DomainName: "bench.test",
			TimeEpoch:  time.Now().UnixMilli(),
			HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{
				Method: p.Method, Path: p.Path, Protocol: "HTTP/1.1", SourceIP: "127.0.0.1", UserAgent: "cirrus-bench",
			},
		},
	}
	if p.Auth {
		ev.Headers["authorization"] = "Bearer " + token
	}
	if len(p.Body) > 0 {
		ev.Headers["content-type"] = "application/json"
		ev.Body = base64.StdEncoding.EncodeToString(p.Body)
		ev.IsBase64Encoded = true
	}
	return json.Marshal(ev)
}

// fakeRuntime is the Lambda Runtime API, as far as a cold start needs it: the
// first /next hands out one event, the function's /response is timed, and
// later /next calls wait until the process is stopped.
type fakeRuntime struct {
	srv    *http.Server
	addr   string
	event  []byte
	sqs    bool // the event is an SQS batch: any answer counts
	expect int  // the status that counts (0: any 2xx)
	quit   chan struct{}
	result chan runtimeResult

	mu     sync.Mutex
	handed bool
	nextAt time.Time // when the first /next arrived
}

type runtimeResult struct {
	at     time.Time
	status int // the API Gateway response's statusCode
	err    string
}

func newFakeRuntime(event []byte, sqs bool, expect int) (*fakeRuntime, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	fr := &fakeRuntime{addr: ln.Addr().String(), event: event, sqs: sqs, expect: expect, quit: make(chan struct{}), result: make(chan runtimeResult, 4)}
	mux := http.NewServeMux()
	const base = "/2018-06-01/runtime"
	mux.HandleFunc("GET "+base+"/invocation/next", func(w http.ResponseWriter, r *http.Request) {
		at := time.Now()
		fr.mu.Lock()
		first := !fr.handed
		if first {
			fr.handed, fr.nextAt = true, at
		}
		fr.mu.Unlock()
		if !first {
			select {
			case <-r.Context().Done():
			case <-fr.quit:
			}
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Lambda-Runtime-Aws-Request-Id", "bench-request-1")
		h.Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(time.Now().Add(29*time.Second).UnixMilli(), 10))
		h.Set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:000000000000:function:bench")
		h.Set("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000;Sampled=0")
		_, _ = w.Write(fr.event)
	})
	mux.HandleFunc("POST "+base+"/invocation/{id}/response", func(w http.ResponseWriter, r *http.Request) {
		at := time.Now()
		body, _ := io.ReadAll(r.Body)
		var resp events.APIGatewayV2HTTPResponse
		res := runtimeResult{at: at}
		if fr.sqs {
			if !json.Valid(body) {
				res.err = fmt.Sprintf("worker answered %.200q", body)
			}
		} else if err := json.Unmarshal(body, &resp); err != nil {
			res.err = fmt.Sprintf("response is not an API Gateway response: %.200s", body)
		} else {
			res.status = resp.StatusCode
			ok := resp.StatusCode/100 == 2
			if fr.expect != 0 {
				ok = resp.StatusCode == fr.expect
			}
			if !ok {
				b := resp.Body
				if resp.IsBase64Encoded {
					d, _ := base64.StdEncoding.DecodeString(b)
					b = string(d)
				}
				res.err = fmt.Sprintf("HTTP %d: %.300s", resp.StatusCode, b)
			}
		}
		fr.result <- res
		w.WriteHeader(http.StatusAccepted)
	})
	failed := func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fr.result <- runtimeResult{at: time.Now(), err: fmt.Sprintf("function reported an error: %.300s", body)}
		w.WriteHeader(http.StatusAccepted)
	}
	mux.HandleFunc("POST "+base+"/invocation/{id}/error", failed)
	mux.HandleFunc("POST "+base+"/init/error", failed)
	fr.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go fr.srv.Serve(ln)
	return fr, nil
}

func (fr *fakeRuntime) close() {
	close(fr.quit)
	fr.srv.Close()
}

// coldStartLambda execs a function's bootstrap against a fake Runtime API
// and returns the time from exec to its first response, and to its first
// call for an event (init).
func coldStartLambda(bin, fn string, vars map[string]string, event []byte, probe probeRequest, logPath string) (total, init time.Duration, err error) {
	fr, err := newFakeRuntime(event, probe.SQS, probe.Expect)
	if err != nil {
		return 0, 0, err
	}
	defer fr.close()
	v := map[string]string{
		"AWS_LAMBDA_RUNTIME_API":          fr.addr,
		"AWS_LAMBDA_FUNCTION_NAME":        fn,
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
		"AWS_LAMBDA_FUNCTION_VERSION":     "$LATEST",
	}
	for k, x := range vars {
		v[k] = x
	}
	p, err := startProc(fn, bin, envList(baseEnv(), v), logPath)
	if err != nil {
		return 0, 0, err
	}
	defer p.stop()
	select {
	case res := <-fr.result:
		if res.err != "" {
			return 0, 0, errors.New(res.err)
		}
		fr.mu.Lock()
		next := fr.nextAt
		fr.mu.Unlock()
		return res.at.Sub(p.started), next.Sub(p.started), nil
	case <-p.done:
		return 0, 0, p.exited()
	case <-time.After(30 * time.Second):
		return 0, 0, fmt.Errorf("no response within 30 s; log:\n%s", tail(logPath, 10))
	}
}

// coldStartHTTP execs the all-in-one on an existing embedded data dir and
// returns the time from exec to its first 200 from /versions.
func coldStartHTTP(ctx context.Context, bin, dataDir, logPath string) (time.Duration, error) {
	port, err := freePort()
	if err != nil {
		return 0, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	env := envList(baseEnv(), map[string]string{
		"CIRRUS_SERVER_NAME": "bench.test",
		"CIRRUS_LISTEN_ADDR": addr,
		"CIRRUS_DATA_DIR":    dataDir,
		"CIRRUS_LOG_LEVEL":   "warn",
	})
	c := newClient("http://"+addr, 1)
	defer c.close()
	p, err := startProc("homeserver", bin, env, logPath)
	if err != nil {
		return 0, err
	}
	defer p.stop()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.ready(rctx); err != nil {
		if e := p.exited(); e != nil {
			return 0, e
		}
		return 0, err
	}
	return time.Since(p.started), nil
}

// runFunctions measures every built function: binary size, and cold starts
// (runs of each, median). Lambda functions run against the AWS stand-ins
// through a fake Runtime API; the all-in-one is measured twice: as the HTTP
// server on the embedded store, and as a Lambda on the stand-ins.
func runFunctions(ctx context.Context, binDir string, dirs []string, aws *awsEnv, runs int, work string) []functionResult {
	var out []functionResult
	logDir := filepath.Join(work, "coldstart")
	_ = os.MkdirAll(logDir, 0o700)
	for _, dir := range dirs {
		bin := filepath.Join(binDir, dir)
		var size int64
		if fi, err := os.Stat(bin); err == nil {
			size = fi.Size()
		}
		if dir == "homeserver" {
			out = append(out, coldStartsHomeserver(ctx, bin, size, runs, logDir))
			if aws != nil {
				r := functionResult{Dir: dir, Function: "all-in-one", Mode: "Lambda, stand-ins", Bytes: size,
					Probe: "GET /_matrix/client/versions"}
				lambdaRuns(&r, bin, "Homeserver", aws, runs, logDir, func(int) (probeRequest, error) {
					return probeRequest{Method: http.MethodGet, Path: "/_matrix/client/versions", Label: "GET /_matrix/client/versions"}, nil
				})
				out = append(out, r)
			}
			continue
		}
		fn := camel(dir)
		r := functionResult{Dir: dir, Function: fn, Mode: "Lambda, stand-ins", Bytes: size}
		if aws == nil {
			r.Skipped = "cold start skipped: no AWS stand-ins (-skip-aws)"
			out = append(out, r)
			continue
		}
		lambdaRuns(&r, bin, fn, aws, runs, logDir, func(i int) (probeRequest, error) {
			return probeFor(fn, fixture{user: aws.alice.UserID, room: aws.room, since: aws.since}, i)
		})
		out = append(out, r)
	}
	return out
}

func lambdaRuns(r *functionResult, bin, fn string, aws *awsEnv, runs int, logDir string, probe func(int) (probeRequest, error)) {
	// One unmeasured run first: the page cache then holds the binary, as it
	// does for every measured run after it.
	for i := -1; i < runs; i++ {
		p, err := probe(i + 1)
		if err != nil {
			r.Error = err.Error()
			return
		}
		r.Probe = p.Label
		ev, err := apiEvent(p, aws.alice.AccessToken)
		if err != nil {
			r.Error = err.Error()
			return
		}
		d, init, err := coldStartLambda(bin, fn, aws.child, ev, p, filepath.Join(logDir, fmt.Sprintf("%s-%d.log", fn, i+1)))
		if err != nil {
			r.Error = err.Error()
			return
		}
		if i >= 0 {
			r.Runs = append(r.Runs, ms(d))
			r.InitRuns = append(r.InitRuns, ms(init))
		}
	}
	r.Median = Median(r.Runs)
	r.InitMedian = Median(r.InitRuns)
}

func coldStartsHomeserver(ctx context.Context, bin string, size int64, runs int, logDir string) functionResult {
	r := functionResult{Dir: "homeserver", Function: "all-in-one", Mode: "HTTP, embedded store", Bytes: size,
		Probe: "GET /_matrix/client/versions"}
	data := filepath.Join(logDir, "homeserver-data")
	// The first start creates the store and the signing key (not measured,
	// and it warms the page cache); the measured starts open them.
	for i := -1; i < runs; i++ {
		d, err := coldStartHTTP(ctx, bin, data, filepath.Join(logDir, fmt.Sprintf("homeserver-%d.log", i+1)))
		if err != nil {
			r.Error = err.Error()
			return r
		}
		if i >= 0 {
			r.Runs = append(r.Runs, ms(d))
		}
	}
	r.Median = Median(r.Runs)
	return r
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
