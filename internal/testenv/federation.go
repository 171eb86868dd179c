package testenv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/cirrus-matrix/cirrus/core/resources"
	"github.com/cirrus-matrix/cirrus/infra/app"
	"github.com/cirrus-matrix/cirrus/infra/awstest"
	"github.com/cirrus-matrix/cirrus/infra/config"
	sqsqueue "github.com/cirrus-matrix/cirrus/infra/sqs"
)

// FedServer is one of several Cirrus servers federating on loopback in one
// test process: each has its own embedded store, its client API on an
// httptest server, its federation API on its own HTTPS port (self-signed
// certificate, verification skipped by its peers) and its federation sender
// running in the background.
type FedServer struct {
	// Name is the server name: "localhost:<port>" or "127.0.0.1:<port>",
	// the port being the federation listener's.
	Name string
	// URL and HTTP reach the client API (URL changes on Restart).
	URL  string
	HTTP *http.Client
	// FedURL is the federation listener's base URL (https).
	FedURL string
	App    *app.App
	Vars   map[string]string

	t          testing.TB
	port       int
	mu         sync.Mutex
	stopper    func()
	senderStop func()
}

// FedHTTP is an HTTP client for federation listeners (self-signed
// certificates accepted).
var FedHTTP = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}

// StartFederation starts n servers that can federate with each other. Even
// servers are named localhost:<port>, odd ones 127.0.0.1:<port> (so server
// ACLs, which ignore ports, can tell them apart). vars add settings to all.
func StartFederation(t testing.TB, n int, vars map[string]string) []*FedServer {
	t.Helper()
	return StartFederationOn(t, "embedded", n, vars)
}

// StartFederationOn is StartFederation on an engine: "embedded" (each
// server its own bbolt file and queue) or "aws" (each server its own
// DynamoDB table, SQS queues and S3 bucket on the local stand-ins).
func StartFederationOn(t testing.TB, engine string, n int, vars map[string]string) []*FedServer {
	t.Helper()
	var awsVars func() map[string]string
	switch engine {
	case "embedded":
	case "aws":
		awsVars = awsServerVars(t)
	default:
		t.Fatalf("federation tests run on embedded or aws, not %q", engine)
	}
	out := make([]*FedServer, n)
	for i := range out {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		host := "localhost"
		if i%2 == 1 {
			host = "127.0.0.1"
		}
		env := map[string]string{
			"CIRRUS_SERVER_NAME":                    host + ":" + strconv.Itoa(port),
			"CIRRUS_REGISTRATION":                   "open",
			"CIRRUS_BCRYPT_COST":                    "4",
			"CIRRUS_RATE_LIMITS":                    "false",
			"CIRRUS_LOG_LEVEL":                      "error",
			"CIRRUS_DATA_DIR":                       t.TempDir(),
			"CIRRUS_FEDERATION_LISTEN_ADDR":         ln.Addr().String(),
			"CIRRUS_FEDERATION_TLS_SKIP_VERIFY":     "true",
			"CIRRUS_FEDERATION_ALLOW_PRIVATE_ADDRS": "true",
			"CIRRUS_FEDERATION_RETRY_MIN":           "200ms",
			"CIRRUS_FEDERATION_RETRY_MAX":           "2s",
			"CIRRUS_FEDERATION_REQUEST_TIMEOUT":     "20s",
		}
		if awsVars != nil {
			for k, v := range awsVars() {
				env[k] = v
			}
		}
		for k, v := range vars {
			env[k] = v
		}
		s := &FedServer{Name: env["CIRRUS_SERVER_NAME"], Vars: env, t: t, port: port}
		s.start(ln)
		t.Cleanup(s.Stop)
		out[i] = s
	}
	return out
}

func (s *FedServer) start(ln net.Listener) {
	t := s.t
	get := func(k string) string { return s.Vars[k] }
	cfg, err := config.Load(get)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("CIRRUS_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("server", s.Name)
	}
	a, err := app.Build(context.Background(), cfg, log)
	if err != nil {
		t.Fatalf("build %s: %v", s.Name, err)
	}
	tc, err := a.FederationTLS()
	if err != nil {
		t.Fatal(err)
	}
	fed := &http.Server{Handler: a.FederationHandler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = fed.Serve(tls.NewListener(ln, tc)) }()
	client := httptest.NewServer(a.Server.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.RunFederationSender(ctx)
	}()
	stopSender := sync.OnceFunc(func() {
		cancel()
		<-done
	})
	s.mu.Lock()
	s.App, s.URL, s.HTTP = a, client.URL, client.Client()
	s.FedURL = "https://" + ln.Addr().String()
	s.senderStop = stopSender
	// The fan-out worker runs until the server stops (StopSender leaves it
	// running: it is what fills the federation outbox).
	fctx, fcancel := context.WithCancel(context.Background())
	fdone := make(chan struct{})
	go func() {
		defer close(fdone)
		a.RunFanout(fctx)
	}()
	s.stopper = func() {
		stopSender()
		fcancel()
		<-fdone
		_ = fed.Close()
		client.Close()
		_ = a.Close()
	}
	s.mu.Unlock()
}

// StopSender stops the in-process federation sender (the queue then fills
// up, for a test to drive as the Lambda would).
func (s *FedServer) StopSender() {
	s.mu.Lock()
	stop := s.senderStop
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// Stop shuts the server down (its data stays for Restart). Idempotent.
func (s *FedServer) Stop() {
	s.mu.Lock()
	stop := s.stopper
	s.stopper = nil
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// Restart starts a stopped server again on the same port and data.
func (s *FedServer) Restart() {
	s.t.Helper()
	s.Stop()
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(s.port)); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("restart %s: %v", s.Name, err)
	}
	s.start(ln)
}

// Eventually polls f until it returns nil or the timeout passes, and
// returns how long it took.
func Eventually(t testing.TB, timeout time.Duration, what string, f func() error) time.Duration {
	t.Helper()
	start := time.Now()
	var err error
	for time.Since(start) < timeout {
		if err = f(); err == nil {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err == nil {
		err = errors.New("timed out")
	}
	t.Fatalf("%s: not after %s: %v", what, timeout, err)
	return 0
}

// String names the server in test output.
func (s *FedServer) String() string { return fmt.Sprintf("%s (%s)", s.Name, s.URL) }

// awsServerVars prepares the stand-ins and returns, per call, the settings
// of one more server: its own table, bucket and queues (servers sharing a
// queue would take each other's work).
func awsServerVars(t testing.TB) func() map[string]string {
	awstest.Require(t, "DYNAMODB")
	awstest.Require(t, "SQS")
	s3 := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	t.Cleanup(s3.Close)
	t.Setenv("AWS_ENDPOINT_URL_S3", s3.URL)
	for k, v := range map[string]string{"AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"} {
		if os.Getenv(k) == "" {
			t.Setenv(k, v)
		}
	}
	ctx := context.Background()
	clients, _, err := app.NewAWSClients(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return func() map[string]string {
		suffix := randomSuffix()
		env := map[string]string{
			"CIRRUS_STORAGE":              "aws",
			"CIRRUS_AWS_CREATE_RESOURCES": "true",
			"CIRRUS_TABLE":                "cirrus-fed-" + suffix,
			"CIRRUS_MEDIA_BUCKET":         "cirrus-media-" + suffix,
		}
		for _, spec := range resources.Queues {
			own := spec
			base := strings.TrimSuffix(spec.Name, ".fifo")
			own.Name = base + "-" + suffix
			if spec.FIFO {
				own.Name += ".fifo"
			}
			url, _, err := sqsqueue.EnsureQueue(ctx, clients.SQS, own)
			if err != nil {
				t.Fatal(err)
			}
			switch spec.Name {
			case resources.FederationQueue.Name:
				env["CIRRUS_FEDERATION_QUEUE_URL"] = url
			case resources.FanoutQueue.Name:
				env["CIRRUS_FANOUT_QUEUE_URL"] = url
			case resources.AppServiceQueue.Name:
				env["CIRRUS_APPSERVICE_QUEUE_URL"] = url
			}
		}
		return env
	}
}
