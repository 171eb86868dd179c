package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/cirrus-matrix/cirrus/core/resources"
	"github.com/cirrus-matrix/cirrus/infra/app"
	"github.com/cirrus-matrix/cirrus/infra/config"
	"github.com/cirrus-matrix/cirrus/infra/dynamo"
	s3store "github.com/cirrus-matrix/cirrus/infra/s3"
	sqsqueue "github.com/cirrus-matrix/cirrus/infra/sqs"
)

// awsEnv is the all-in-one built in this process on the AWS adapters, over
// the DynamoDB and SQS stand-ins and an in-process S3 (gofakes3), so the
// adapters' counters can be read between requests. The cold starts of the
// Lambda functions run against the same table.
type awsEnv struct {
	app *app.App
	c   *client
	// peer is a second instance on the same resources, as another Lambda
	// would be: what it does is not in app's counters.
	peer  *client
	child map[string]string // settings for separate processes on the same resources
	alice *session
	room  string
	since string // alice's latest /sync token, for the ClientSync cold start
	notes []string
}

func randomSuffix() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func startAWSEnv(ctx context.Context, work string) (*awsEnv, error) {
	s3srv := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	atExit.add(s3srv.Close)
	os.Setenv("AWS_ENDPOINT_URL_S3", s3srv.URL)
	suffix := randomSuffix()
	vars := map[string]string{
		"CIRRUS_SERVER_NAME":          "bench.test",
		"CIRRUS_STORAGE":              "aws",
		"CIRRUS_AWS_CREATE_RESOURCES": "true",
		"CIRRUS_TABLE":                "bench-" + suffix,
		"CIRRUS_MEDIA_BUCKET":         "bench-media-" + suffix,
		"CIRRUS_REGISTRATION":         "open",
		"CIRRUS_BCRYPT_COST":          "4",
		"CIRRUS_RATE_LIMITS":          "false",
		"CIRRUS_LOG_LEVEL":            "error",
		"CIRRUS_DATA_DIR":             filepath.Join(work, "aws"),
	}
	cfg, err := config.Load(func(k string) string { return vars[k] })
	if err != nil {
		return nil, fmt.Errorf("aws config: %w", err)
	}
	a, err := app.Build(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return nil, fmt.Errorf("aws app: %w", err)
	}
	atExit.add(func() { a.Close() })
	srv := httptest.NewServer(a.Server.Handler()) // listens on 127.0.0.1
	atExit.add(srv.Close)
	pa, err := app.Build(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return nil, fmt.Errorf("aws app: %w", err)
	}
	atExit.add(func() { pa.Close() })
	psrv := httptest.NewServer(pa.Server.Handler())
	atExit.add(psrv.Close)

	// The queue URLs, for processes started without CIRRUS_AWS_CREATE_RESOURCES
	// (as deployed functions are: template.yaml hands them the URLs).
	clients, _, err := app.NewAWSClients(ctx)
	if err != nil {
		return nil, err
	}
	child := map[string]string{
		"CIRRUS_SERVER_NAME":  vars["CIRRUS_SERVER_NAME"],
		"CIRRUS_STORAGE":      "aws",
		"CIRRUS_TABLE":        vars["CIRRUS_TABLE"],
		"CIRRUS_MEDIA_BUCKET": vars["CIRRUS_MEDIA_BUCKET"],
		"CIRRUS_REGISTRATION": "open",
		"CIRRUS_RATE_LIMITS":  "false",
		"CIRRUS_LOG_LEVEL":    "error",
		// Only the stand-ins: no profile files, no instance metadata.
		"AWS_CONFIG_FILE":             os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
		"AWS_EC2_METADATA_DISABLED":   "true",
	}
	for _, k := range []string{"AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} {
		child[k] = os.Getenv(k)
	}
	urlVar := map[string]string{
		resources.FederationQueue.Name: "CIRRUS_FEDERATION_QUEUE_URL",
		resources.FanoutQueue.Name:     "CIRRUS_FANOUT_QUEUE_URL",
		resources.AppServiceQueue.Name: "CIRRUS_APPSERVICE_QUEUE_URL",
	}
	e := &awsEnv{app: a, c: newClient(srv.URL, 8), peer: newClient(psrv.URL, 2), child: child}
	for _, spec := range resources.Queues {
		u, _, err := sqsqueue.EnsureQueue(ctx, clients.SQS, spec)
		if err != nil {
			return nil, err
		}
		if v := urlVar[spec.Name]; v != "" {
			child[v] = u
			continue
		}
		// A queue this harness does not know the setting of: let the
		// functions look the resources up themselves (a few more calls in
		// each cold start).
		child["CIRRUS_AWS_CREATE_RESOURCES"] = "true"
		e.notes = append(e.notes, fmt.Sprintf("cold starts ran with CIRRUS_AWS_CREATE_RESOURCES=true: no setting known for queue %s", spec.Name))
	}
	return e, nil
}

// counts is a snapshot of every adapter's counters.
type counts struct {
	dynamo dynamo.Stats
	sqs    sqsqueue.Stats
	s3     s3store.Stats
	ok     bool // the table is the DynamoDB adapter (its counters exist)
}

func (e *awsEnv) snapshot() counts { return snapshotOf(e.app) }

// snapshotOf reads the counters of one app's AWS adapters.
func snapshotOf(a *app.App) counts {
	var c counts
	if t, ok := a.Table.(interface{ Stats() dynamo.Stats }); ok {
		c.dynamo, c.ok = t.Stats(), true
	}
	names := make([]string, 0, len(a.Queues))
	for n := range a.Queues {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if q, ok := a.Queues[n].(interface{ Stats() sqsqueue.Stats }); ok {
			s := q.Stats()
			c.sqs.SendMessageBatch += s.SendMessageBatch
			c.sqs.ReceiveMessage += s.ReceiveMessage
			c.sqs.DeleteMessage += s.DeleteMessage
			c.sqs.ChangeMessageVisibility += s.ChangeMessageVisibility
		}
	}
	if b, ok := a.Blobs.(interface{ Stats() s3store.Stats }); ok {
		c.s3 = b.Stats()
	}
	return c
}

// opCost is what one operation costs on the AWS adapters, averaged over N.
type opCost struct {
	Op     string             `json:"op"`
	N      int                `json:"n"`
	Reads  float64            `json:"dynamodb_read_calls"`  // GetItem, BatchGetItem, Query
	Writes float64            `json:"dynamodb_write_calls"` // PutItem, DeleteItem, UpdateItem, TransactWriteItems
	RCU    float64            `json:"rcu"`
	WCU    float64            `json:"wcu"`
	Calls  map[string]float64 `json:"dynamodb_calls_by_api"`
	Errors float64            `json:"dynamodb_errors"` // condition failures and conflicts included
	SQS    float64            `json:"sqs_requests"`
	S3Puts float64            `json:"s3_puts"` // PutObject and presigned PUTs
	S3Gets float64            `json:"s3_gets"` // GetObject, HeadObject and presigned GETs
	// WallMS is the median time of one operation, client to server in this
	// process against the stand-ins (the Lambda duration model starts here).
	WallMS float64 `json:"wall_ms"`
	Note   string  `json:"note,omitempty"`
}

func isRead(op dynamo.Operation) bool {
	return op == dynamo.OpGetItem || op == dynamo.OpBatchGetItem || op == dynamo.OpQuery
}

func costBetween(name string, n int, before, after counts) opCost {
	d := after.dynamo.Sub(before.dynamo)
	k := float64(n)
	oc := opCost{Op: name, N: n, Calls: map[string]float64{}}
	for _, op := range dynamo.Operations() {
		s := d.Op(op)
		if s.Calls == 0 {
			continue
		}
		oc.Calls[op.String()] = float64(s.Calls) / k
		if isRead(op) {
			oc.Reads += float64(s.Calls) / k
		} else {
			oc.Writes += float64(s.Calls) / k
		}
		oc.RCU += s.RCU / k
		oc.WCU += s.WCU / k
		oc.Errors += float64(s.Errors) / k
	}
	q := after.sqs.Sub(before.sqs)
	oc.SQS = float64(q.Total()) / k
	// A presigned URL is an S3 request the client makes itself.
	oc.S3Puts = float64(after.s3.PutObject-before.s3.PutObject+after.s3.PresignPut-before.s3.PresignPut) / k
	oc.S3Gets = float64(after.s3.GetObject-before.s3.GetObject+after.s3.HeadObject-before.s3.HeadObject+
		after.s3.PresignGet-before.s3.PresignGet) / k
	return oc
}

// measure runs f(0..n-1) one after another and returns the per-operation
// counts between snapshots.
func (e *awsEnv) measure(name string, n int, f func(i int) error) (opCost, error) {
	before := e.snapshot()
	var walls []float64
	for i := range n {
		t := time.Now()
		if err := f(i); err != nil {
			return opCost{}, fmt.Errorf("%s: %w", name, err)
		}
		walls = append(walls, float64(time.Since(t))/float64(time.Millisecond))
	}
	oc := costBetween(name, n, before, e.snapshot())
	oc.WallMS = Median(walls)
	return oc, nil
}

// awsResult is the AWS path: calls and capacity per operation.
type awsResult struct {
	Status string   `json:"status"`
	Ops    []opCost `json:"ops"`
	Notes  []string `json:"notes,omitempty"`
}

func (r *awsResult) op(name string) *opCost {
	for i := range r.Ops {
		if r.Ops[i].Op == name {
			return &r.Ops[i]
		}
	}
	return nil
}

// Operation names the cost model and the targets look up.
const (
	opSend          = "message send"
	opSendContend   = "message send, 4 senders in one room"
	opSendBig       = "message send, room of 50 members"
	opFanoutBig     = "fan-out worker per message, room of 50 members"
	opMessages      = "/messages page of 100"
	opLogin         = "login"
	opWhoami        = "whoami (auth only)"
	opSyncIdle      = "incremental sync, nothing new"
	opSyncHeld      = "empty long-poll (held to the cap)"
	opSyncWake      = "sync wake-up, one new event sent on another instance"
	opSyncWakeLocal = "sync wake-up, one new event sent in the same process"
	opSyncInitial   = "initial sync"
	opReceipt       = "read receipt"
	opTyping        = "typing notice"
	opUpload        = "media upload (64 KiB)"
	opDownload      = "media download (64 KiB)"
)

// runAWSPath measures each operation on the AWS adapters.
func runAWSPath(ctx context.Context, e *awsEnv) (*awsResult, error) {
	c := e.c
	res := &awsResult{Status: "measured"}
	if !e.snapshot().ok {
		return nil, fmt.Errorf("the table is not the DynamoDB adapter: no counters")
	}
	add := func(oc opCost, err error) error {
		if err == nil {
			res.Ops = append(res.Ops, oc)
		}
		return err
	}
	names := []string{"alice", "bob", "carol", "dave"}
	users := make([]*session, len(names))
	if err := add(e.measure("register (2 requests: UIA)", len(names), func(i int) (err error) {
		users[i], err = c.register(ctx, names[i], benchPassword)
		return err
	})); err != nil {
		return nil, err
	}
	alice := users[0]
	e.alice = alice
	if err := add(e.measure(opLogin, 5, func(int) error {
		_, err := c.login(ctx, "alice", benchPassword)
		return err
	})); err != nil {
		return nil, err
	}
	if err := add(e.measure(opWhoami, 10, func(int) error { return c.whoami(ctx, alice.AccessToken) })); err != nil {
		return nil, err
	}
	var room string
	if err := add(e.measure("createRoom (public_chat)", 1, func(int) (err error) {
		room, err = c.createRoom(ctx, alice.AccessToken, "bench")
		return err
	})); err != nil {
		return nil, err
	}
	e.room = room
	if err := add(e.measure("join", 3, func(i int) error { return c.join(ctx, users[i+1].AccessToken, room) })); err != nil {
		return nil, err
	}
	sentIDs := make([]string, 120)
	if err := add(e.measure(opSend, len(sentIDs), func(i int) (err error) {
		sentIDs[i], err = c.send(ctx, alice.AccessToken, room, fmt.Sprintf("aws-%d", i), fmt.Sprintf("%saws %d", benchBody, i))
		return err
	})); err != nil {
		return nil, err
	}
	// Concurrent senders in one room race for the room head; the losers
	// re-read and retry, which costs calls.
	before := e.snapshot()
	const each = 30
	var wg sync.WaitGroup
	errs := make(chan error, len(users))
	t0 := time.Now()
	for w, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := c.send(ctx, u.AccessToken, room, fmt.Sprintf("aws-c%d-%d", w, i), fmt.Sprintf("%saws c%d-%d", benchBody, w, i)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, fmt.Errorf("%s: %w", opSendContend, err)
	}
	oc := costBetween(opSendContend, len(users)*each, before, e.snapshot())
	oc.WallMS = float64(time.Since(t0)) / float64(time.Millisecond) / float64(each)
	oc.Note = "wall_ms is per send as each sender saw it"
	res.Ops = append(res.Ops, oc)

	// The reference community's size: a room with 50 members.
	big, err := bigRoom(ctx, c, alice, users, ReferenceCommunity.Users)
	if err != nil {
		return nil, err
	}
	// The fan-out worker does not run in this process: drain what setup
	// left (not counted), then count its work for the sends below.
	fo := e.app.Server.Fanout()
	if err := fo.Drain(ctx); err != nil {
		return nil, fmt.Errorf("fan-out drain: %w", err)
	}
	if err := add(e.measure(opSendBig, 50, func(i int) error {
		_, err := c.send(ctx, alice.AccessToken, big, fmt.Sprintf("aws-big-%d", i), fmt.Sprintf("%saws big %d", benchBody, i))
		return err
	})); err != nil {
		return nil, err
	}
	before = e.snapshot()
	t0 = time.Now()
	if err := fo.Drain(ctx); err != nil {
		return nil, fmt.Errorf("fan-out drain: %w", err)
	}
	oc = costBetween(opFanoutBig, 50, before, e.snapshot())
	oc.WallMS = float64(time.Since(t0)) / float64(time.Millisecond) / 50
	oc.Note = "one drain of the 50 sends above, per event: push rules for 49 members, notifications, unread counts, search postings, federation and appservice checks"
	res.Ops = append(res.Ops, oc)

	if err := add(e.measure(opMessages, 5, func(int) error {
		n, err := c.messagesBack(ctx, alice.AccessToken, room, 100)
		if err == nil && n != 100 {
			err = fmt.Errorf("page held %d events, want 100", n)
		}
		return err
	})); err != nil {
		return nil, err
	}

	if err := measureEphemeral(ctx, e, res, users[1], room, sentIDs[len(sentIDs)-6:]); err != nil {
		res.Notes = append(res.Notes, "receipts and typing: "+err.Error())
	}
	if err := measureMedia(ctx, e, res, alice); err != nil {
		res.Notes = append(res.Notes, "media: "+err.Error())
	}

	bob := users[1]
	sr := probeSync(ctx, c, bob.AccessToken)
	if !sr.Implemented {
		res.Notes = append(res.Notes, "sync: "+notImplemented)
		return res, nil
	}
	if err := measureAWSSync(ctx, e, res, alice, bob, room); err != nil {
		res.Notes = append(res.Notes, "sync: "+err.Error())
	}
	var r syncResponse
	if _, err := c.do(ctx, http.MethodGet, syncPath+"?timeout=0", alice.AccessToken, nil, &r); err != nil {
		res.Notes = append(res.Notes, "sync token for the ClientSync cold start: "+err.Error())
	}
	e.since = r.NextBatch
	return res, nil
}

// bigRoom makes a room with n members: alice's, the users already made,
// and new ones.
func bigRoom(ctx context.Context, c *client, alice *session, have []*session, n int) (string, error) {
	room, err := c.createRoom(ctx, alice.AccessToken, "bench big")
	if err != nil {
		return "", err
	}
	members := append([]*session(nil), have[1:]...)
	for i := len(have); i < n; i++ {
		s, err := c.register(ctx, fmt.Sprintf("member%03d", i), benchPassword)
		if err != nil {
			return "", err
		}
		members = append(members, s)
	}
	err = parallel(len(members), 4, func(i int) error { return c.join(ctx, members[i].AccessToken, room) })
	return room, err
}

// measureAWSSync counts what /sync costs, all on one instance's counters:
// an initial sync; an incremental sync with nothing new; a long-poll held to
// the server's cap with nothing happening (what an idle connected client
// costs, polling included); a long-poll woken by a send on another instance
// (how a Lambda learns of it); and one woken by a send in the same process
// (the all-in-one; the send's own calls subtracted).
func measureAWSSync(ctx context.Context, e *awsEnv, res *awsResult, alice, bob *session, room string) error {
	c := e.c
	get := func(q string) (*syncResponse, error) {
		var r syncResponse
		_, err := c.do(ctx, http.MethodGet, syncPath+q, bob.AccessToken, nil, &r)
		return &r, err
	}
	var since string
	poll := func(timeout int) func(int) error {
		return func(int) error {
			r, err := get(fmt.Sprintf("?timeout=%d&since=%s", timeout, url.QueryEscape(since)))
			if err == nil && r.NextBatch != "" {
				since = r.NextBatch
			}
			return err
		}
	}
	oc, err := e.measure(opSyncInitial, 1, func(int) error {
		r, err := get("?timeout=0")
		since = r.NextBatch
		return err
	})
	if err != nil {
		return err
	}
	res.Ops = append(res.Ops, oc)
	if oc, err = e.measure(opSyncIdle, 5, poll(0)); err != nil {
		return err
	}
	oc.Note = "timeout=0"
	res.Ops = append(res.Ops, oc)
	// Ask for more than any cap: the server holds the request for its own.
	if oc, err = e.measure(opSyncHeld, 1, poll(60000)); err != nil {
		return err
	}
	oc.Note = fmt.Sprintf("held %.1f s (the server's cap) while nobody wrote", oc.WallMS/1000)
	res.Ops = append(res.Ops, oc)

	wake := func(name string, sender *client, subtract *opCost) error {
		var costs []opCost
		var lat []time.Duration
		for i := range 5 {
			before := e.snapshot()
			done := make(chan error, 1)
			var got *syncResponse
			go func() {
				r, err := get("?timeout=20000&since=" + url.QueryEscape(since))
				got = r
				done <- err
			}()
			time.Sleep(300 * time.Millisecond) // the long-poll is waiting
			if _, err := sender.send(ctx, alice.AccessToken, room, fmt.Sprintf("aws-wake-%d-%d", len(res.Ops), i), fmt.Sprintf("%swake %d", benchBody, i)); err != nil {
				return err
			}
			sent := time.Now()
			if err := <-done; err != nil {
				return err
			}
			lat = append(lat, time.Since(sent))
			if got.NextBatch != "" {
				since = got.NextBatch
			}
			costs = append(costs, costBetween(name, 1, before, e.snapshot()))
		}
		avg := averageCosts(name, costs)
		if subtract != nil {
			avg.subtract(subtract)
		}
		d := Summarize(lat)
		avg.WallMS = d.P50
		avg.Note = fmt.Sprintf("woke %.0f ms (p50) after the send returned", d.P50)
		if subtract != nil {
			avg.Note += "; the send's own calls subtracted"
		}
		res.Ops = append(res.Ops, avg)
		return nil
	}
	if err := wake(opSyncWake, e.peer, nil); err != nil {
		return err
	}
	return wake(opSyncWakeLocal, c, res.op(opSend))
}

func averageCosts(name string, cs []opCost) opCost {
	avg := opCost{Op: name, N: len(cs), Calls: map[string]float64{}}
	k := float64(len(cs))
	for _, w := range cs {
		avg.Reads += w.Reads / k
		avg.Writes += w.Writes / k
		avg.RCU += w.RCU / k
		avg.WCU += w.WCU / k
		avg.Errors += w.Errors / k
		avg.SQS += w.SQS / k
		avg.S3Puts += w.S3Puts / k
		avg.S3Gets += w.S3Gets / k
		for api, n := range w.Calls {
			avg.Calls[api] += n / k
		}
	}
	return avg
}

func (o *opCost) subtract(x *opCost) {
	o.Reads -= x.Reads
	o.Writes -= x.Writes
	o.RCU -= x.RCU
	o.WCU -= x.WCU
	o.Errors -= x.Errors
	o.SQS -= x.SQS
	o.S3Puts -= x.S3Puts
	o.S3Gets -= x.S3Gets
	for api, n := range x.Calls {
		o.Calls[api] -= n
	}
}

// measureEphemeral counts a read receipt and a typing notice.
func measureEphemeral(ctx context.Context, e *awsEnv, res *awsResult, u *session, room string, events []string) error {
	c := e.c
	rp := "/_matrix/client/v3/rooms/" + url.PathEscape(room)
	// Each receipt moves the read marker one event on, as reading does.
	receipt := func(i int) error {
		_, err := c.do(ctx, http.MethodPost, rp+"/receipt/m.read/"+url.PathEscape(events[i]), u.AccessToken, map[string]any{}, nil)
		return err
	}
	if err := receipt(0); err != nil {
		return err
	}
	oc, err := e.measure(opReceipt, len(events)-1, func(i int) error { return receipt(i + 1) })
	if err != nil {
		return err
	}
	oc.Note = "each on the next event"
	res.Ops = append(res.Ops, oc)
	if oc, err = e.measure(opTyping, 5, func(i int) error {
		_, err := c.do(ctx, http.MethodPut, rp+"/typing/"+url.PathEscape(u.UserID), u.AccessToken,
			map[string]any{"typing": i%2 == 0, "timeout": 30000}, nil)
		return err
	}); err != nil {
		return err
	}
	oc.Note = "typing on and off in turn"
	res.Ops = append(res.Ops, oc)
	return nil
}

// measureMedia counts an upload and a download.
func measureMedia(ctx context.Context, e *awsEnv, res *awsResult, alice *session) error {
	c := e.c
	body := make([]byte, 64<<10)
	_, _ = rand.Read(body)
	upload := func() (string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/_matrix/media/v3/upload?filename=bench.bin", bytes.NewReader(body))
		if err != nil {
			return "", err
		}
		req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := c.http.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			me := &matrixError{Status: resp.StatusCode, Body: string(raw)}
			_ = json.Unmarshal(raw, me)
			return "", me
		}
		var out struct {
			ContentURI string `json:"content_uri"`
		}
		if err := json.Unmarshal(raw, &out); err != nil || !strings.HasPrefix(out.ContentURI, "mxc://") {
			return "", fmt.Errorf("upload answered %.200s", raw)
		}
		return strings.TrimPrefix(out.ContentURI, "mxc://"), nil
	}
	// A first upload (not counted) to download below.
	first, err := upload()
	if err != nil {
		return err
	}
	oc, err := e.measure(opUpload, 5, func(int) error { _, err := upload(); return err })
	if err != nil {
		return err
	}
	res.Ops = append(res.Ops, oc)
	if oc, err = e.measure(opDownload, 5, func(int) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/_matrix/client/v1/media/download/"+first, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
		resp, err := c.http.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		got, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !bytes.Equal(got, body) {
			return fmt.Errorf("download: HTTP %d, %d bytes", resp.StatusCode, len(got))
		}
		return nil
	}); err != nil {
		return err
	}
	oc.Note = "a redirect to a presigned URL is followed (counted as an S3 GET)"
	res.Ops = append(res.Ops, oc)
	return nil
}
