package main

import (
	"fmt"
	"math"
)

// Prices is the price table the cost model uses: AWS us-east-1, on-demand,
// Lambda on arm64, as issue 8 lists them. Data, with its date: update the
// numbers and the date together.
type Prices struct {
	Date                string  `json:"date"`
	Source              string  `json:"source"`
	LambdaPerMRequests  float64 `json:"lambda_per_million_requests"`
	LambdaPerGBSecond   float64 `json:"lambda_per_gb_second"`
	HTTPAPIPerMRequests float64 `json:"http_api_per_million_requests"`
	DynamoPerMWRU       float64 `json:"dynamodb_per_million_write_request_units"`
	DynamoPerMRRU       float64 `json:"dynamodb_per_million_read_request_units"`
	S3PutPer1k          float64 `json:"s3_put_per_thousand"`
	S3GetPer1k          float64 `json:"s3_get_per_thousand"`
	SQSPerMRequests     float64 `json:"sqs_per_million_requests"`
	// HostPerMonth is a small always-on host for an origin (SyncOrigin):
	// EC2 t4g.nano on demand ($0.0042/h) plus its public IPv4 address
	// ($0.005/h), 730 h a month.
	HostPerMonth float64 `json:"host_per_month"`
}

// PriceTable is the table in force.
var PriceTable = Prices{
	Date:                "2026-11-25",
	Source:              "AWS us-east-1 on-demand list prices as given in issue 8 (no free tier applied)",
	LambdaPerMRequests:  0.20,
	LambdaPerGBSecond:   0.0000133334,
	HTTPAPIPerMRequests: 1.00,
	DynamoPerMWRU:       0.625,
	DynamoPerMRRU:       0.125,
	S3PutPer1k:          0.005,
	S3GetPer1k:          0.0004,
	SQSPerMRequests:     0.40,
	HostPerMonth:        730 * (0.0042 + 0.005),
}

// ModelParams are the model's assumptions that are not prices. Each one is
// printed with the results.
type ModelParams struct {
	DaysPerMonth float64 `json:"days_per_month"`
	// LambdaMemoryMB is every function's memory (template.yaml Globals).
	LambdaMemoryMB float64 `json:"lambda_memory_mb"`
	// SyncCapSeconds is how long a /sync long-poll waits at most before it
	// returns empty (below API Gateway's 30 s integration timeout).
	SyncCapSeconds float64 `json:"sync_cap_s"`
	// DynamoRTTMS is the time one DynamoDB call adds to a Lambda's billed
	// duration in AWS (the stand-ins answer faster than the real service).
	DynamoRTTMS float64 `json:"dynamodb_round_trip_ms"`
	// RemoteShare is the share of the workload's messages that remote
	// users send (they reach us as inbound transactions); every local
	// message goes to every remote server (an upper bound).
	RemoteShare float64 `json:"remote_message_share"`
	// SyncOrigin prices the deployment whose long-polls go to an
	// all-in-one on a small host (the template's SyncOrigin): the host's
	// fixed price instead of Lambda's held wall time, and the /sync
	// requests cost API Gateway but no Lambda.
	SyncOrigin bool `json:"sync_origin"`
}

// DefaultParams are the assumptions in force.
var DefaultParams = ModelParams{DaysPerMonth: 30, LambdaMemoryMB: 128, SyncCapSeconds: 28, DynamoRTTMS: 5, RemoteShare: 0.25}

// Workload is a community to price.
type Workload struct {
	Name               string  `json:"name"`
	Users              int     `json:"users"`
	MessagesPerDay     float64 `json:"messages_per_day"`
	ConnectedClients   float64 `json:"clients_connected_on_average"`
	RemoteServers      int     `json:"remote_servers"`
	MediaUploadsPerDay float64 `json:"media_uploads_per_day"`
}

// The workloads issue 8 asks for.
var (
	ReferenceCommunity = Workload{Name: "reference community", Users: 50, MessagesPerDay: 2000, ConnectedClients: 10, RemoteServers: 3, MediaUploadsPerDay: 100}
	IdleServer         = Workload{Name: "server nobody uses"}
)

// OpCounts is what one request costs, as measured on the AWS path.
type OpCounts struct {
	Calls  float64 `json:"dynamodb_calls"`
	RRU    float64 `json:"rru"`
	WRU    float64 `json:"wru"`
	SQS    float64 `json:"sqs_requests"`
	S3Puts float64 `json:"s3_puts"`
	S3Gets float64 `json:"s3_gets"`
	WallMS float64 `json:"wall_ms"`
}

// CostInputs are the measured per-request counts; nil means not measured
// (the feature does not exist yet).
type CostInputs struct {
	Send     *OpCounts `json:"send"`
	SyncIdle *OpCounts `json:"sync_idle"` // an incremental sync with nothing new, not waiting
	SyncHeld *OpCounts `json:"sync_held"` // a long-poll held to the cap, nothing new (WallMS: how long)
	SyncWake *OpCounts `json:"sync_wake"` // a long-poll woken by one new event from another instance
	Upload   *OpCounts `json:"media_upload"`
	Download *OpCounts `json:"media_download"`
	Receipt  *OpCounts `json:"receipt"`
	Typing   *OpCounts `json:"typing"`
	// FedOut is a message send in a room with one remote server plus its
	// delivery there (queue and sender included); FedIn is one inbound
	// transaction carrying one PDU.
	FedOut *OpCounts `json:"federation_out"`
	FedIn  *OpCounts `json:"federation_in"`
	// Fanout is the fan-out worker's work for one message (push rules,
	// notifications, counts, search index, federation and appservice
	// checks), in a room the size of the community.
	Fanout *OpCounts `json:"fanout"`
	// LocalSend is a send in a room without remote servers (FedOut minus
	// it is what delivering to one server adds).
	LocalSend *OpCounts `json:"local_send"`
	// QueueWorkers are the functions fed by SQS event source mappings.
	QueueWorkers []string `json:"queue_workers"`
}

// Line statuses.
const (
	StatusMeasured    = "measured"
	StatusModel       = "model"
	StatusNotMeasured = "not measured yet"
	// StatusNoRate: measured per request, but the workload does not say how
	// often it happens, so it is priced per 10,000 and left out of the total.
	StatusNoRate = "no rate in the workload"
)

// CostLine is one thing that costs money, per month.
type CostLine struct {
	Item   string `json:"item"`
	Status string `json:"status"`
	Basis  string `json:"basis"`
	// Monthly quantities.
	Requests  float64 `json:"requests"`
	GBSeconds float64 `json:"lambda_gb_s"`
	RRU       float64 `json:"rru"`
	WRU       float64 `json:"wru"`
	SQS       float64 `json:"sqs_requests"`
	S3Puts    float64 `json:"s3_puts"`
	S3Gets    float64 `json:"s3_gets"`
	// Dollars per month.
	Lambda  float64 `json:"lambda_usd"`
	HTTPAPI float64 `json:"http_api_usd"`
	Dynamo  float64 `json:"dynamodb_usd"`
	Queue   float64 `json:"sqs_usd"`
	Storage float64 `json:"s3_usd"`
	Host    float64 `json:"host_usd"`
	Total   float64 `json:"total_usd"`
}

// CostReport is one workload priced.
type CostReport struct {
	Workload Workload    `json:"workload"`
	Lines    []CostLine  `json:"lines"`
	Total    float64     `json:"total_usd_per_month"`
	Complete bool        `json:"complete"` // false while some lines are not measured yet
	Prices   Prices      `json:"prices"`
	Params   ModelParams `json:"params"`
}

func (p Prices) price(l *CostLine) {
	l.Lambda = l.Requests*p.LambdaPerMRequests/1e6 + l.GBSeconds*p.LambdaPerGBSecond
	l.HTTPAPI = l.Requests * p.HTTPAPIPerMRequests / 1e6
	l.Dynamo = l.RRU*p.DynamoPerMRRU/1e6 + l.WRU*p.DynamoPerMWRU/1e6
	l.Queue = l.SQS * p.SQSPerMRequests / 1e6
	l.Storage = l.S3Puts*p.S3PutPer1k/1e3 + l.S3Gets*p.S3GetPer1k/1e3
	l.Total = l.Lambda + l.HTTPAPI + l.Dynamo + l.Queue + l.Storage + l.Host
}

// billedSeconds is a request's Lambda duration: its measured time plus a
// round trip per DynamoDB call, rounded up to the millisecond as Lambda bills.
func (m ModelParams) billedSeconds(o *OpCounts) float64 {
	return math.Ceil(o.WallMS+o.Calls*m.DynamoRTTMS) / 1000
}

func (m ModelParams) gb() float64 { return m.LambdaMemoryMB / 1024 }

// Cost prices a workload from measured counts.
func Cost(w Workload, in CostInputs, p Prices, m ModelParams) CostReport {
	r := CostReport{Workload: w, Prices: p, Params: m, Complete: true}
	secondsPerMonth := m.DaysPerMonth * 86400
	add := func(l CostLine) {
		p.price(&l)
		r.Lines = append(r.Lines, l)
		r.Total += l.Total
		if l.Status == StatusNotMeasured {
			r.Complete = false
		}
	}
	// addWorker adds a line for an SQS-triggered function: its requests
	// are Lambda invocations, not HTTP API requests.
	addWorker := func(l CostLine) {
		p.price(&l)
		l.Total -= l.HTTPAPI
		l.HTTPAPI = 0
		r.Lines = append(r.Lines, l)
		r.Total += l.Total
	}

	// Sends: one ClientSend invocation and one HTTP API request each.
	sends := w.MessagesPerDay * m.DaysPerMonth
	sl := CostLine{Item: "message sends (ClientSend)", Requests: sends,
		Basis: "messages/day × days; DynamoDB units, calls and time per send measured on the AWS path in a room of 50 members"}
	if in.Send != nil {
		sl.Status = StatusMeasured
		sl.GBSeconds = sends * m.billedSeconds(in.Send) * m.gb()
		sl.RRU, sl.WRU = sends*in.Send.RRU, sends*in.Send.WRU
		sl.SQS = sends * in.Send.SQS
	} else {
		sl.Status = StatusNotMeasured
		sl.Requests = 0
	}
	add(sl)

	// addProxied adds a line for requests API Gateway proxies to the sync
	// origin: HTTP API requests, no Lambda.
	addProxied := func(l CostLine) {
		p.price(&l)
		l.Total -= l.Lambda
		l.Lambda = 0
		r.Lines = append(r.Lines, l)
		r.Total += l.Total
	}

	// /sync: each connected client holds one long-poll all the time, and
	// Lambda bills the wall time it is held; a sync origin holds them all
	// for its host's price.
	addSync := add
	if m.SyncOrigin {
		addSync = addProxied
		add(CostLine{Item: "sync origin host (SyncOrigin), fixed", Status: StatusModel, Host: p.HostPerMonth,
			Basis: "an all-in-one holding every long-poll: EC2 t4g.nano on demand + its public IPv4 address, 730 h; whatever the clients"})
	} else {
		add(CostLine{Item: "/sync long-polls held (wall time)", Status: StatusModel,
			GBSeconds: w.ConnectedClients * secondsPerMonth * m.gb(),
			Basis:     "clients connected × seconds/month × function memory: one /sync always open per connected client"})
	}

	// /sync requests: one per wake-up (assume every message reaches every
	// connected client: an upper bound) and one each time a long-poll
	// reaches the cap empty.
	capSeconds := m.SyncCapSeconds
	if in.SyncHeld != nil && in.SyncHeld.WallMS > 1000 {
		capSeconds = in.SyncHeld.WallMS / 1000
	}
	wakes := w.ConnectedClients * sends
	empties := w.ConnectedClients * secondsPerMonth / capSeconds
	ql := CostLine{Item: "/sync requests (wake-ups + empty returns)", Requests: wakes + empties,
		Basis: fmt.Sprintf("each message wakes each connected client (upper bound); an idle long-poll returns every %.0f s", capSeconds)}
	if in.SyncIdle != nil && in.SyncWake != nil {
		ql.Status = StatusMeasured
		ql.RRU = wakes*in.SyncWake.RRU + empties*in.SyncIdle.RRU
		ql.WRU = wakes*in.SyncWake.WRU + empties*in.SyncIdle.WRU
		ql.SQS = wakes*in.SyncWake.SQS + empties*in.SyncIdle.SQS
		ql.Basis += "; DynamoDB units per wake-up and per empty return measured"
	} else {
		ql.Status = StatusModel
		ql.Basis += "; DynamoDB units per sync not measured yet (no /sync)"
	}
	if m.SyncOrigin {
		ql.Basis += "; through API Gateway to the sync origin, no Lambda"
	}
	addSync(ql)

	// While a long-poll waits, a Lambda watches the streams for writes by
	// other instances: what that reads per held second is the held request's
	// units beyond an immediate one's.
	if in.SyncIdle != nil && in.SyncHeld != nil && in.SyncHeld.WallMS > 0 {
		held := in.SyncHeld.WallMS / 1000
		perSecond := max(0, in.SyncHeld.RRU-in.SyncIdle.RRU) / held
		add(CostLine{Item: "/sync waiting: reads while held (cross-instance wake-up)", Status: StatusMeasured,
			RRU:   w.ConnectedClients * secondsPerMonth * perSecond,
			Basis: fmt.Sprintf("clients × seconds/month × %.2f read units per held second (measured over a %.0f s empty long-poll)", perSecond, held)})
	}

	// Lambda's pollers long-poll every worker's queue all the time, and
	// those receives are billed as SQS requests even when nothing comes:
	// the one cost an idle server has. AWS publishes no rate for them.
	for _, q := range in.QueueWorkers {
		add(CostLine{Item: "SQS pollers of " + q + " (event source mapping)", Status: StatusNotMeasured,
			Basis: "Lambda's pollers long-poll the queue continuously (billed as SQS requests); the rate is AWS's and not published"})
	}
	// Federation: each local message goes to every remote server (one
	// FederationSender invocation and transaction each: an upper bound, a
	// busy room batches), and remote users' messages arrive as inbound
	// transactions (one FederationSend invocation and HTTP API request each).
	if w.RemoteServers > 0 {
		if in.FedOut != nil && in.LocalSend != nil && in.FedIn != nil {
			local := sends * (1 - m.RemoteShare)
			deliveries := local * float64(w.RemoteServers)
			extra := OpCounts{Calls: max(0, in.FedOut.Calls-in.LocalSend.Calls), RRU: max(0, in.FedOut.RRU-in.LocalSend.RRU),
				WRU: max(0, in.FedOut.WRU-in.LocalSend.WRU), SQS: in.FedOut.SQS, WallMS: max(0, in.FedOut.WallMS-in.LocalSend.WallMS)}
			add(CostLine{Item: "federation out (FederationSender)", Status: StatusMeasured,
				GBSeconds: deliveries * m.billedSeconds(&extra) * m.gb(), RRU: deliveries * extra.RRU, WRU: deliveries * extra.WRU, SQS: deliveries * extra.SQS,
				Basis: fmt.Sprintf("local messages (%.0f%% of all) × %d remote servers, one transaction each; per delivery: what a send with one remote server costs beyond a local one, measured (it includes the fan-out handlers of a 2-member room, also in the fan-out line: a small overlap)", 100*(1-m.RemoteShare), w.RemoteServers)})
			// The worker's invocations: SQS-triggered, so no HTTP API request.
			addWorker(CostLine{Item: "federation out: worker invocations", Status: StatusModel, Requests: deliveries,
				Basis: "one FederationSender invocation per delivery (batching makes it fewer)"})
			remote := sends * m.RemoteShare
			add(CostLine{Item: "federation in (FederationSend)", Status: StatusMeasured, Requests: remote,
				GBSeconds: remote * m.billedSeconds(in.FedIn) * m.gb(), RRU: remote * in.FedIn.RRU, WRU: remote * in.FedIn.WRU, SQS: remote * in.FedIn.SQS,
				Basis: fmt.Sprintf("remote users' messages (%.0f%% of all), one transaction each; per transaction measured", 100*m.RemoteShare)})
		} else {
			add(CostLine{Item: "federation: sends to remote servers, inbound transactions", Status: StatusNotMeasured,
				Basis: "the AWS path's federation measurement did not run"})
		}
	}
	if w.MediaUploadsPerDay > 0 && in.Upload != nil && in.Download != nil {
		ups := w.MediaUploadsPerDay * m.DaysPerMonth
		downs := ups * w.ConnectedClients
		for _, x := range []struct {
			item, basis string
			n           float64
			o           *OpCounts
		}{
			{"media uploads (Media)", "uploads/day × days; calls, S3 requests and time per 64 KiB upload measured", ups, in.Upload},
			{"media downloads (Media)", "each upload fetched once by each connected client (assumption); per download measured", downs, in.Download},
		} {
			add(CostLine{Item: x.item, Status: StatusMeasured, Basis: x.basis, Requests: x.n,
				GBSeconds: x.n * m.billedSeconds(x.o) * m.gb(), RRU: x.n * x.o.RRU, WRU: x.n * x.o.WRU,
				SQS: x.n * x.o.SQS, S3Puts: x.n * x.o.S3Puts, S3Gets: x.n * x.o.S3Gets})
		}
	} else if w.MediaUploadsPerDay > 0 {
		add(CostLine{Item: "media uploads and downloads (S3, Media)", Status: StatusNotMeasured,
			Basis: "the AWS path's media measurement did not run"})
	}
	if w.ConnectedClients > 0 || w.MessagesPerDay > 0 {
		for _, x := range []struct {
			item string
			o    *OpCounts
		}{{"read receipts (ClientUserData)", in.Receipt}, {"typing notices (ClientUserData)", in.Typing}} {
			if x.o == nil {
				add(CostLine{Item: x.item, Status: StatusNotMeasured, Basis: "the AWS path's measurement did not run"})
				continue
			}
			// Priced per 10,000 requests; each also wakes the room's
			// connected clients (a /sync wake-up each, not included).
			l := CostLine{Requests: 1e4, GBSeconds: 1e4 * m.billedSeconds(x.o) * m.gb(), RRU: 1e4 * x.o.RRU, WRU: 1e4 * x.o.WRU, SQS: 1e4 * x.o.SQS}
			p.price(&l)
			r.Lines = append(r.Lines, CostLine{Item: x.item, Status: StatusNoRate,
				Basis: fmt.Sprintf("$%.3f per 10,000 (measured), plus a /sync wake-up per connected client in the room; the workload gives no rate", l.Total)})
			r.Complete = false
		}
		if in.Fanout != nil {
			// One FanoutWorker invocation per message at most (a burst is
			// one drain): SQS-triggered, no HTTP API request.
			addWorker(CostLine{Item: "fan-out worker (FanoutWorker)", Status: StatusMeasured, Requests: sends,
				GBSeconds: sends * m.billedSeconds(in.Fanout) * m.gb(), RRU: sends * in.Fanout.RRU, WRU: sends * in.Fanout.WRU, SQS: sends * (in.Fanout.SQS + 1),
				Basis: "one drain per message (upper bound), measured per event in a room of 50 members; +1 SQS request for its wake-up"})
		} else {
			add(CostLine{Item: "fan-out worker (FanoutWorker)", Status: StatusNotMeasured, Basis: "the AWS path's fan-out measurement did not run"})
		}
		add(CostLine{Item: "presence, to-device", Status: StatusNotMeasured,
			Basis: "not exercised by the harness"})
	}
	return r
}

// Share returns each line's share of the total, in percent.
func (r CostReport) Share(l CostLine) float64 {
	if r.Total == 0 {
		return 0
	}
	return 100 * l.Total / r.Total
}
