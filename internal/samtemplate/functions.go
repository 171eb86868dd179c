package samtemplate

import (
	"github.com/cirrus-matrix/cirrus/core/queue"
	"github.com/cirrus-matrix/cirrus/core/resources"
	"github.com/cirrus-matrix/cirrus/core/server"
)

// Function holds what the route table cannot say about a Lambda function.
// Every field is optional: a function of the route table without an entry
// in Functions gets the defaults below.
type Function struct {
	// Description replaces the comment of the function's Fn* constant in
	// core/server (which is the description otherwise).
	Description string
	// MemorySize in MB (default DefaultMemorySize). Lambda gives CPU in
	// proportion to memory, so this is also the CPU knob.
	MemorySize int
	// Timeout in seconds. Default: DefaultTimeout for a function behind the
	// API, half its queue's visibility timeout for a worker.
	Timeout int
	// ReservedConcurrency caps (and reserves) the function's concurrent
	// executions; 0 leaves it unreserved. Reservations come out of the
	// account's pool, which is small on new accounts: use with care.
	ReservedConcurrency int
	// Why is written as a comment above the function in template.yaml:
	// say why the settings differ from the defaults.
	Why string
	// Environment adds variables to the Globals ones: variable → the
	// template parameter that gives its value (a secret only this function
	// may see, say).
	Environment map[string]string

	// Queue makes the function a worker: it serves no route and consumes
	// this queue (one of resources.Queues) through an SQS event with
	// partial batch failures.
	Queue *queue.Spec
	// BatchSize is how many messages a worker gets at once (default, and
	// the most for a FIFO queue, queue.MaxBatch).
	BatchSize int
	// Schedule, for a worker, also invokes it on this EventBridge schedule
	// ("rate(5 minutes)") with an event that has no SQS records: a sweep.
	Schedule string
}

const (
	// DefaultMemorySize is the smallest Lambda size; enough for JSON
	// request handling.
	DefaultMemorySize = 128
	// DefaultTimeout is below API Gateway's 30 s integration timeout, so a
	// slow request ends with the function's own error rather than a bare
	// 503 from the gateway.
	DefaultTimeout = 29
)

// Functions are the settings of individual functions, by logical id (the
// Fn* constants of core/server, or a worker's name). A function of the route
// table needs no entry here; a worker must have one (with Queue set), and a
// directory functions/<kebab-case name>/.
//
// An entry for a function that does not exist yet is allowed (so settings
// can be agreed before the routes land); the generator then prints a note.
var Functions = map[string]Function{
	server.FnDiscovery: {
		Description: "versions, .well-known, capabilities, login flows; unmatched requests",
	},
	server.FnAuth: {
		Description: "registration, login, logout, refresh, whoami, login tokens, shared-secret registration",
		MemorySize:  512,
		Why: "512 MB: bcrypt at cost 12 is CPU-bound, and Lambda's CPU grows with memory " +
			"(at 128 MB one hash takes seconds). Only this function gets the shared registration secret.",
		Environment: map[string]string{"CIRRUS_REGISTRATION_SHARED_SECRET": "RegistrationSharedSecret"},
	},
	server.FnAccount: {
		Description: "devices, password, deactivation, 3PIDs, profiles",
	},
	server.FnMedia: {
		MemorySize: 512,
		Why: "512 MB: thumbnails decode whole images in memory (a 20-megapixel photo is 80 MB as RGBA) " +
			"and resizing them is CPU-bound.",
	},
	server.FnSync: {
		MemorySize: DefaultMemorySize,
		Timeout:    DefaultTimeout,
		Why: "It holds each request open (long poll) while it waits for events, so it is idle, not busy: " +
			"the smallest size, and the longest timeout API Gateway allows; the handler must answer before it.",
	},

	// Workers.
	"FederationSender": {
		Description: "delivers our events to other servers (FederationQueue, one message group per destination)",
		Queue:       &resources.FederationQueue,
		Why: "Timeout: half the queue's visibility timeout (the default for workers), so a batch ends " +
			"well before its messages could be delivered again.",
	},
	"FanoutWorker": {
		Description: "push rules, notifications, unread counts, push gateways and other per-event work (FanoutQueue, one message group)",
		Queue:       &resources.FanoutQueue,
		Why: "Timeout: half the queue's visibility timeout, so a batch ends before its messages could come back; " +
			"the cursor in the table is saved after every read of the stream, so a cut-off drain loses nothing. " +
			"Schedule: a sweep every 5 minutes queues a wake-up, so an event whose own wake-up message was lost " +
			"(a process that died between commit and send) waits minutes, not until the next event.",
		Schedule: "rate(5 minutes)",
	},
	"AppserviceSender": {
		Description: "pushes events to application services (AppServiceQueue, one message group per service)",
		Queue:       &resources.AppServiceQueue,
		Why: "Timeout: half the queue's visibility timeout (the default for workers), so a batch ends " +
			"well before its messages could be delivered again.",
	},
}

// Worker is a function that consumes a queue.
type Worker struct {
	Name  string
	Queue queue.Spec
}

// Workers lists the functions of Functions that consume a queue, sorted.
func Workers() []Worker {
	var out []Worker
	for _, name := range sortedKeys(Functions) {
		if q := Functions[name].Queue; q != nil {
			out = append(out, Worker{name, *q})
		}
	}
	return out
}

// NotDeployed are directories under functions/ that are not functions of
// the stack: the all-in-one server.
var NotDeployed = map[string]bool{"homeserver": true}

// The queues and the table the template creates.
var (
	queues = resources.Queues
	table  = resources.Table
)
