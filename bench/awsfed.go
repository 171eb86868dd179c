package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/core/resources"
	"github.com/cirrus-matrix/cirrus/infra/app"
	"github.com/cirrus-matrix/cirrus/infra/config"
	sqsqueue "github.com/cirrus-matrix/cirrus/infra/sqs"
)

// Federation operations of the AWS path.
const (
	opFedOut = "message send + delivery to one remote server"
	opFedIn  = "inbound transaction (one PDU)"
)

// fedNode is one server of the AWS federation measurement, in this process.
type fedNode struct {
	app  *app.App
	name string
	c    *client
}

// startFedNode builds a server whose federation listener is ln, with vars
// on top of the federation test settings, and runs its workers.
func startFedNode(ctx context.Context, ln net.Listener, host string, vars map[string]string) (*fedNode, error) {
	port := ln.Addr().(*net.TCPAddr).Port
	env := map[string]string{
		"CIRRUS_SERVER_NAME":                    host + ":" + strconv.Itoa(port),
		"CIRRUS_REGISTRATION":                   "open",
		"CIRRUS_BCRYPT_COST":                    "4",
		"CIRRUS_RATE_LIMITS":                    "false",
		"CIRRUS_LOG_LEVEL":                      "error",
		"CIRRUS_FEDERATION_LISTEN_ADDR":         ln.Addr().String(),
		"CIRRUS_FEDERATION_TLS_SKIP_VERIFY":     "true",
		"CIRRUS_FEDERATION_ALLOW_PRIVATE_ADDRS": "true",
		"CIRRUS_FEDERATION_RETRY_MIN":           "200ms",
		"CIRRUS_FEDERATION_RETRY_MAX":           "2s",
	}
	for k, v := range vars {
		env[k] = v
	}
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		return nil, err
	}
	a, err := app.Build(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return nil, err
	}
	atExit.add(func() { a.Close() })
	tc, err := a.FederationTLS()
	if err != nil {
		return nil, err
	}
	fed := &http.Server{Handler: a.FederationHandler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = fed.Serve(tls.NewListener(ln, tc)) }()
	atExit.add(func() { fed.Close() })
	srv := httptest.NewServer(a.Server.Handler())
	atExit.add(srv.Close)
	wctx, cancel := context.WithCancel(ctx)
	atExit.add(cancel)
	go a.RunFederationSender(wctx)
	go a.RunFanout(wctx) // the federation outbox is filled by a fan-out handler
	return &fedNode{app: a, name: env["CIRRUS_SERVER_NAME"], c: newClient(srv.URL, 4)}, nil
}

// measureAWSFederation counts what federation costs the server on the AWS
// adapters (A), federating with an embedded server (B) on loopback: an
// outgoing message (the send, queuing it, and the federation sender's
// transaction to B), and an incoming transaction from B.
func measureAWSFederation(ctx context.Context, work string, res *awsResult) error {
	clients, _, err := app.NewAWSClients(ctx)
	if err != nil {
		return err
	}
	suffix := randomSuffix()
	awsVars := map[string]string{
		"CIRRUS_STORAGE":              "aws",
		"CIRRUS_AWS_CREATE_RESOURCES": "true",
		"CIRRUS_TABLE":                "benchfed-" + suffix,
		"CIRRUS_MEDIA_BUCKET":         "benchfed-media-" + suffix,
		"CIRRUS_DATA_DIR":             filepath.Join(work, "fed-a"),
	}
	// Its own queues: the AWS path's server must not take its work.
	for _, spec := range resources.Queues {
		own := spec
		own.Name = strings.TrimSuffix(spec.Name, ".fifo") + "-" + suffix
		if spec.FIFO {
			own.Name += ".fifo"
		}
		u, _, err := sqsqueue.EnsureQueue(ctx, clients.SQS, own)
		if err != nil {
			return err
		}
		switch spec.Name {
		case resources.FederationQueue.Name:
			awsVars["CIRRUS_FEDERATION_QUEUE_URL"] = u
		case resources.FanoutQueue.Name:
			awsVars["CIRRUS_FANOUT_QUEUE_URL"] = u
		}
	}
	var lns [2]net.Listener
	for i := range lns {
		if lns[i], err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return err
		}
	}
	a, err := startFedNode(ctx, lns[0], "127.0.0.1", awsVars)
	if err != nil {
		return fmt.Errorf("server A (AWS adapters): %w", err)
	}
	b, err := startFedNode(ctx, lns[1], "localhost", map[string]string{"CIRRUS_DATA_DIR": filepath.Join(work, "fed-b")})
	if err != nil {
		return fmt.Errorf("server B (embedded): %w", err)
	}
	alice, err := a.c.register(ctx, "alice", benchPassword)
	if err != nil {
		return err
	}
	bob, err := b.c.register(ctx, "bob", benchPassword)
	if err != nil {
		return err
	}
	room, err := a.c.createRoom(ctx, alice.AccessToken, "federation cost")
	if err != nil {
		return err
	}
	joinPath := "/_matrix/client/v3/join/" + url.PathEscape(room) + "?server_name=" + url.QueryEscape(a.name)
	if _, err := b.c.do(ctx, http.MethodPost, joinPath, bob.AccessToken, map[string]any{}, nil); err != nil {
		return fmt.Errorf("bob joins over federation: %w", err)
	}
	// has polls a client API until the event is there.
	has := func(n *fedNode, token, eid string) error {
		path := "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/event/" + url.PathEscape(eid)
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err := n.c.do(ctx, http.MethodGet, path, token, nil, nil)
			if err == nil {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("event %s did not arrive at %s: %w", eid, n.name, err)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	env := &awsEnv{app: a.app}
	const n = 20
	// Outgoing: A's calls for the send and for delivering it to B (B's
	// polling is on B's counters).
	oc, err := env.measure(opFedOut, n, func(i int) error {
		eid, err := a.c.send(ctx, alice.AccessToken, room, fmt.Sprintf("fed-out-%d", i), fmt.Sprintf("%sfed out %d", benchBody, i))
		if err != nil {
			return err
		}
		return has(b, bob.AccessToken, eid)
	})
	if err != nil {
		return err
	}
	oc.Note = "wall_ms: send → readable on B; includes the fan-out worker's handlers (push, search, federation outbox) and the federation sender"
	res.Ops = append(res.Ops, oc)
	// Incoming: A's calls while B's transaction arrives and is persisted.
	// Whether it has arrived is asked of a second instance on A's resources,
	// whose calls are not counted.
	checkCfg, err := config.Load(func(k string) string {
		if v, ok := awsVars[k]; ok {
			return v
		}
		if k == "CIRRUS_SERVER_NAME" {
			return a.name
		}
		return map[string]string{"CIRRUS_LOG_LEVEL": "error", "CIRRUS_RATE_LIMITS": "false"}[k]
	})
	if err != nil {
		return err
	}
	check, err := app.Build(ctx, checkCfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
	}
	atExit.add(func() { check.Close() })
	csrv := httptest.NewServer(check.Server.Handler())
	atExit.add(csrv.Close)
	checker := &fedNode{app: check, name: a.name, c: newClient(csrv.URL, 2)}
	oc, err = env.measure(opFedIn, n, func(i int) error {
		eid, err := b.c.send(ctx, bob.AccessToken, room, fmt.Sprintf("fed-in-%d", i), fmt.Sprintf("%sfed in %d", benchBody, i))
		if err != nil {
			return err
		}
		return has(checker, alice.AccessToken, eid)
	})
	if err != nil {
		return err
	}
	oc.Note = "PUT /send on A (FederationSend) with its PDU checks and persistence; wall_ms: B's send → readable on A"
	res.Ops = append(res.Ops, oc)
	return nil
}
