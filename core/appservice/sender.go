package appservice

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/outbox"
	"github.com/cirrus-matrix/cirrus/core/queue"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Delivery works like the federation sender, on the same core/outbox loop.
// When an event is persisted, each interested application service gets an
// outbox item in the table and a wake-up message on the AppServiceQueue (FIFO, message group = the
// service's id: one worker at a time per service, in order). The worker
// drains the outbox in transactions of up to MaxEventsPerTxn events: it
// records the transaction (its txnId and events) before sending, and
// deletes it and its outbox items only once the service answered 2xx.
// A failure hides the message for an exponential backoff; the recorded
// transaction is then re-sent unchanged, so nothing is lost or duplicated.
//
//	as#<id> / out#<%016d stream pos>#<event id>  an event to send
//	as#<id> / txn                                the transaction in flight
//	as#<id> / state                              failures, retry state

// MaxEventsPerTxn bounds the events of one transaction.
const MaxEventsPerTxn = 50

const outPrefix = "out#"

func asPK(name string) string { return "as#" + name }

type wakeMsg struct {
	AppService string `json:"appservice"`
}

type pendingTxn struct {
	TxnID  string       `json:"txn_id"`
	SKs    []string     `json:"sks"`
	Events []id.EventID `json:"events"`
	// EphSKs name the ephemeral outbox items the transaction carries
	// (ephemeral.go).
	EphSKs []string `json:"eph_sks,omitempty"`
}

// Service delivers events to application services and queries them.
type Service struct {
	Registry *Registry
	T        table.Table
	Rooms    *rooms.Service
	// Q is the AppServiceQueue (nil: events are not pushed).
	Q queue.Queue
	// HTTP reaches the services. Their URLs come from the operator's own
	// registration files and usually name localhost or a private network
	// (a bridge next to the homeserver), so they are deliberately NOT sent
	// through core/netguard's SSRF guard, which exists for URLs that users
	// choose.
	HTTP                   *http.Client
	MinBackoff, MaxBackoff time.Duration
	// QueryTimeout bounds one user/alias/third-party query (10 s if 0).
	QueryTimeout time.Duration
	// TypingUsers and PresenceOf read the typing list of a room and a
	// user's presence (m.presence content) for ephemeral data (nil: those
	// kinds are not pushed).
	TypingUsers func(ctx context.Context, room id.RoomID) ([]id.UserID, error)
	PresenceOf  func(ctx context.Context, u id.UserID) (any, error)
	Log         *slog.Logger
	Now         func() time.Time
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Service) client() *http.Client {
	if s.HTTP != nil {
		return s.HTTP
	}
	return http.DefaultClient
}

func (s *Service) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

// Interested lists the services an event goes to (spec "Registration"):
// those whose user namespaces (or sender) hold the event's sender, its
// membership target or a joined local member of the room, or whose room
// or alias namespaces match the room.
func (s *Service) Interested(ctx context.Context, ev *rooms.Event) ([]*Registration, error) {
	if ev.Outlier || ev.Rejected || ev.SoftFailed {
		return nil, nil
	}
	users := []id.UserID{ev.Sender}
	if ev.Type == "m.room.member" && ev.StateKey != nil {
		users = append(users, id.UserID(*ev.StateKey))
	}
	return s.interestedIn(ctx, ev.RoomID, users, false)
}

// interestedIn lists the services interested in something that happens in
// room and involves users (only local ones count): those whose namespaces
// hold one of users or a joined local member of the room, or match the
// room or one of its aliases. ephemeralOnly keeps the services that asked
// for ephemeral data.
func (s *Service) interestedIn(ctx context.Context, room id.RoomID, users []id.UserID, ephemeralOnly bool) ([]*Registration, error) {
	var (
		members    []id.UserID
		aliases    []id.RoomAlias
		gotM, gotA bool
		out        []*Registration
	)
	local := func(u id.UserID) bool {
		_, server, err := u.Parse()
		return err == nil && server == s.Rooms.ServerName
	}
	owns := func(reg *Registration, us []id.UserID) bool {
		for _, u := range us {
			if local(u) && reg.OwnsUser(u) {
				return true
			}
		}
		return false
	}
	for _, reg := range s.Registry.All() {
		if reg.BaseURL() == "" || (ephemeralOnly && !reg.Ephemeral()) {
			continue
		}
		hit := owns(reg, users) || reg.MatchesRoom(room)
		if !hit && len(reg.Namespaces.Aliases) > 0 {
			if !gotA {
				var err error
				if aliases, err = s.Rooms.RoomAliases(ctx, room); err != nil {
					return nil, err
				}
				gotA = true
			}
			for _, a := range aliases {
				if reg.MatchesAlias(a) {
					hit = true
					break
				}
			}
		}
		if !hit {
			if !gotM {
				ms, err := s.Rooms.SyncMembers(ctx, room)
				if err != nil {
					return nil, err
				}
				for _, m := range ms {
					if m.Membership == "join" && local(m.UserID) {
						members = append(members, m.UserID)
					}
				}
				gotM = true
			}
			hit = owns(reg, members)
		}
		if hit {
			out = append(out, reg)
		}
	}
	return out, nil
}

// seenTTL is how long an event's enqueue marker is kept: longer than the
// fan-out worker retries an event.
const seenTTL = 24 * time.Hour

// Enqueue queues an event for the services interested in it: the fan-out
// worker's handler (core/fanout). It is idempotent: the outbox item is
// written together with a marker for the event (IfNotExists), so a repeat
// finds the marker and adds nothing, even after the event was delivered
// and its outbox item deleted.
func (s *Service) Enqueue(ctx context.Context, ev *rooms.Event) error {
	if s.Q == nil || len(s.Registry.All()) == 0 {
		return nil
	}
	regs, err := s.Interested(ctx, ev)
	if err != nil {
		return err
	}
	var msgs []queue.Message
	for _, reg := range regs {
		pk := asPK(reg.ID)
		sk := fmt.Sprintf("%s%016d#%s", outPrefix, ev.Pos, ev.EventID)
		err := s.T.Transact(ctx, []table.Op{
			table.Put(table.Item{PK: pk, SK: "seen#" + string(ev.EventID), TTL: s.now().Add(seenTTL).Unix()}, table.IfNotExists()),
			table.Put(table.Item{PK: pk, SK: sk, Data: []byte(ev.EventID)}, table.Cond{}),
		})
		var txe *table.TxError
		if errors.As(err, &txe) || errors.Is(err, table.ErrConditionFailed) {
			continue // queued before
		}
		if err != nil {
			return err
		}
		msgs = append(msgs, s.wake(reg.ID, string(ev.EventID)))
	}
	if len(msgs) == 0 {
		return nil
	}
	return s.Q.Send(ctx, msgs...)
}

func (s *Service) wake(name, dedup string) queue.Message {
	body, _ := json.Marshal(wakeMsg{AppService: name})
	sum := sha256.Sum256([]byte(name + "\x00" + dedup))
	return queue.Message{Body: body, Group: groupOf(name), DedupID: hex.EncodeToString(sum[:])}
}

// groupOf is the FIFO group of a service: its id hashed, since SQS
// message groups allow only a limited alphabet and ids are free text.
func groupOf(name string) string {
	sum := sha256.Sum256([]byte(name))
	return "as-" + hex.EncodeToString(sum[:16])
}

// worker is the outbox loop over the services' outboxes.
func (s *Service) worker() *outbox.Worker {
	return &outbox.Worker{Kind: "appservice", T: s.T, Q: s.Q,
		Party: func(body []byte) (string, bool) {
			var w wakeMsg
			// A service no longer configured is dropped with its messages.
			return w.AppService, json.Unmarshal(body, &w) == nil && s.Registry.ByID(w.AppService) != nil
		},
		Wake:       s.wake,
		StateKey:   func(name string) table.Key { return table.Key{PK: asPK(name), SK: "state"} },
		Step:       s.step,
		MinBackoff: s.MinBackoff, MaxBackoff: s.MaxBackoff, Log: s.log(), Now: s.now}
}

// Run receives and handles messages until ctx ends (the all-in-one's
// in-process worker).
func (s *Service) Run(ctx context.Context) { s.worker().Run(ctx) }

// Handle processes received messages, one goroutine per service, and
// returns the ids of messages not completed (an SQS partial batch
// failure).
func (s *Service) Handle(ctx context.Context, msgs []queue.Received) []string {
	return s.worker().Handle(ctx, msgs)
}

// step sends a service's next transaction, and deletes it with its outbox
// items once the service took it.
func (s *Service) step(ctx context.Context, name string) (bool, error) {
	txn, ver, err := s.pending(ctx, name)
	if err != nil || txn == nil {
		return txn == nil && err == nil, err
	}
	if err := s.send(ctx, s.Registry.ByID(name), txn); err != nil {
		return false, outbox.Unreachable(err)
	}
	return false, outbox.Complete(ctx, s.T, asPK(name), append(slices.Clone(txn.SKs), txn.EphSKs...), ver)
}

// pending returns the service's transaction in flight, forming one from
// its outbox if there is none (nil when the outbox is empty).
func (s *Service) pending(ctx context.Context, name string) (*pendingTxn, int64, error) {
	k := table.Key{PK: asPK(name), SK: "txn"}
	for range 3 {
		it, err := s.T.Get(ctx, k)
		if err == nil {
			var t pendingTxn
			if err := json.Unmarshal(it.Data, &t); err != nil {
				return nil, 0, err
			}
			return &t, it.Version, nil
		}
		if !errors.Is(err, table.ErrNotFound) {
			return nil, 0, err
		}
		page, err := s.T.Query(ctx, table.Query{PK: asPK(name), Prefix: outPrefix, Limit: MaxEventsPerTxn})
		if err != nil {
			return nil, 0, err
		}
		eph, err := outbox.Live(ctx, s.T, asPK(name), ephPrefix, MaxEphemeralPerTxn)
		if err != nil {
			return nil, 0, err
		}
		if len(page.Items) == 0 && len(eph) == 0 {
			return nil, 0, nil
		}
		var t pendingTxn
		for _, item := range page.Items {
			t.SKs = append(t.SKs, item.SK)
			t.Events = append(t.Events, id.EventID(item.Data))
		}
		for _, item := range eph {
			t.EphSKs = append(t.EphSKs, item.SK)
		}
		// The time and the outbox keys it carries name the transaction;
		// the name is stored, so retries reuse it.
		sum := sha256.Sum256([]byte(strings.Join(append(slices.Clone(t.SKs), t.EphSKs...), "\n")))
		t.TxnID = fmt.Sprintf("%d.%s", s.now().UnixMilli(), hex.EncodeToString(sum[:6]))
		d, _ := json.Marshal(t)
		err = s.T.Put(ctx, table.Item{PK: k.PK, SK: k.SK, Data: d, Version: 1}, table.IfNotExists())
		if err == nil {
			return &t, 1, nil
		}
		if !errors.Is(err, table.ErrConditionFailed) {
			return nil, 0, err
		}
	}
	return nil, 0, errors.New("appservice: could not form a transaction")
}

// send delivers one transaction: PUT /_matrix/app/v1/transactions/{txnId}.
func (s *Service) send(ctx context.Context, reg *Registration, t *pendingTxn) error {
	evs, err := s.Rooms.EventsByID(ctx, t.Events)
	if err != nil {
		return err
	}
	byID := make(map[id.EventID]*rooms.Event, len(evs))
	for _, ev := range evs {
		byID[ev.EventID] = ev
	}
	ordered := make([]*rooms.Event, 0, len(evs))
	for _, e := range t.Events {
		if ev := byID[e]; ev != nil {
			ordered = append(ordered, ev)
		}
	}
	formatted, err := s.Rooms.Format(ctx, ordered, rooms.Viewer{})
	if err != nil {
		return err
	}
	eph, err := outbox.Contents(ctx, s.T, asPK(reg.ID), t.EphSKs)
	if err != nil {
		return err
	}
	if len(formatted) == 0 && len(eph) == 0 {
		return nil // only stale ephemeral data: nothing left to say
	}
	txn := map[string]any{"events": formatted}
	if len(eph) > 0 {
		txn["ephemeral"] = eph
	}
	body, _ := json.Marshal(txn)
	status, resp, err := s.call(ctx, reg, http.MethodPut, "/_matrix/app/v1/transactions/"+url.PathEscape(t.TxnID), nil, body, 0)
	if err != nil {
		return err
	}
	if status/100 != 2 {
		return fmt.Errorf("appservice answered %d: %.200s", status, resp)
	}
	return nil
}

// call makes one request to a service with its hs_token.
func (s *Service) call(ctx context.Context, reg *Registration, method, path string, query url.Values, body []byte, timeout time.Duration) (int, []byte, error) {
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u := reg.BaseURL() + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+reg.HSToken)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client().Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, b, nil
}
