package federation

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"go.mau.fi/util/jsontime"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/outbox"
	"github.com/cirrus-matrix/cirrus/core/queue"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// The federation sender delivers our events and EDUs to other servers.
//
// When an event is persisted (through the fan-out worker, Deliver, so a
// crash right after the commit loses nothing), each server of its room
// gets an outbox item in the table and a wake-up message on the
// FederationQueue (FIFO, message group = destination, so one destination
// is worked on by one worker at a time, in order). SendEDU does the same
// with an EDU outbox item per destination. A worker handling a
// destination's message drains its outbox: it takes up to 50 events and
// 100 EDUs, records them as the destination's pending transaction (with a
// fixed txnId), sends it, and only after the destination accepted it
// deletes the outbox items and then the transaction. If the destination
// fails, the message is hidden for an exponentially growing delay and
// comes back; the pending transaction is then re-sent exactly as before
// (same txnId, same events and EDUs, less typing notices that expired), so
// a redelivery or a worker dying mid-send never duplicates nor loses
// anything, and a destination that was down for hours gets everything when
// it returns.
//
//	dest#<server> / out#<%016d stream pos>#<event id>  an event to send
//	dest#<server> / edu#<%016d µs>#<random>            an EDU to send (typing: ttl 1 min)
//	dest#<server> / txn                                the transaction in flight
//	dest#<server> / dest                               failures, retry state
type Sender struct {
	Fed *Service
	// Q is the FederationQueue (nil: nothing is sent).
	Q                      queue.Queue
	MinBackoff, MaxBackoff time.Duration
	// ViaFanout is set when Deliver is registered on the fan-out worker
	// (core/fanout): our events then reach the outbox from the durable
	// event stream, and OnPersist does nothing.
	ViaFanout bool
}

func destPK(server string) string { return "dest#" + server }

const outPrefix = "out#"

type wakeMsg struct {
	Destination string `json:"destination"`
}

type pendingTxn struct {
	TxnID  string       `json:"txn_id"`
	SKs    []string     `json:"sks"`
	Events []id.EventID `json:"events"`
	// EDUSKs name the EDU outbox items the transaction carries (their
	// contents are read at each attempt: an expired typing EDU drops out).
	EDUSKs []string `json:"edu_sks,omitempty"`
}

// worker is the outbox loop over the destinations' outboxes.
func (sn *Sender) worker() *outbox.Worker {
	return &outbox.Worker{Kind: "federation", T: sn.Fed.T, Q: sn.Q,
		Party: func(body []byte) (string, bool) {
			var w wakeMsg
			return w.Destination, json.Unmarshal(body, &w) == nil
		},
		Wake:       sn.wake,
		StateKey:   func(dest string) table.Key { return table.Key{PK: destPK(dest), SK: "dest"} },
		Step:       sn.step,
		MinBackoff: sn.MinBackoff, MaxBackoff: sn.MaxBackoff, Log: sn.Fed.Log, Now: sn.Fed.now}
}

// wake is the wake-up message for a destination.
func (sn *Sender) wake(dest, dedup string) queue.Message {
	body, _ := json.Marshal(wakeMsg{Destination: dest})
	sum := sha256.Sum256([]byte(dest + "\x00" + dedup))
	return queue.Message{Body: body, Group: dest, DedupID: hex.EncodeToString(sum[:])}
}

// Run receives and handles messages until ctx ends (the in-process worker
// of the all-in-one).
func (sn *Sender) Run(ctx context.Context) { sn.worker().Run(ctx) }

// Handle processes received messages and returns the ids of those not
// completed (an SQS partial batch failure).
func (sn *Sender) Handle(ctx context.Context, msgs []queue.Received) []string {
	return sn.worker().Handle(ctx, msgs)
}

// Nudge retries a destination at once if it is backing off (it just
// talked to us, so it is up).
func (sn *Sender) Nudge(ctx context.Context, server string) { sn.worker().Nudge(ctx, server) }

// step sends a destination's next transaction. A transaction the
// destination understood and refused is dropped, not retried.
func (sn *Sender) step(ctx context.Context, dest string) (bool, error) {
	txn, ver, err := sn.pending(ctx, dest)
	if err != nil || txn == nil {
		return txn == nil && err == nil, err
	}
	if err := sn.send(ctx, dest, txn); err != nil {
		if !permanent(err) {
			return false, outbox.Unreachable(err)
		}
		sn.Fed.Log.Warn("destination refused a transaction; dropping it", "destination", dest, "txn", txn.TxnID, "err", err)
	}
	return false, outbox.Complete(ctx, sn.Fed.T, destPK(dest), append(slices.Clone(txn.SKs), txn.EDUSKs...), ver)
}

// OnPersist is the room engine hook: our own events go to the other
// servers of the room.
func (sn *Sender) OnPersist(ev *rooms.Event) {
	if sn.ViaFanout || !sn.ours(ev) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sn.Enqueue(ctx, ev); err != nil {
		sn.Fed.Log.Error("queueing event for federation", "event_id", ev.EventID, "room", ev.RoomID, "err", err)
	}
}

// ours reports whether an event is one of ours to send.
func (sn *Sender) ours(ev *rooms.Event) bool {
	return sn.Q != nil && !ev.Outlier && !ev.Rejected && !ev.SoftFailed && sn.Fed.isLocal(ev.Sender)
}

// Deliver is the fan-out handler (core/fanout, registered as
// "federation"): it queues one persisted event of ours for the other
// servers of its room. The worker calls it for every event of the stream
// in order, and moves its cursor only after it succeeded, so an event
// committed is queued even if the process dies right after the commit. It
// is idempotent: the outbox items are keyed by stream position and event,
// and the wake-up messages are deduplicated (a run repeated after the
// event was delivered sends it once more, which receivers ignore).
func (sn *Sender) Deliver(ctx context.Context, ev *rooms.Event) error {
	if !sn.ours(ev) {
		return nil
	}
	return sn.Enqueue(ctx, ev)
}

// destinations are the servers an event goes to: those with joined
// members in the room now, and the target of a membership change (so an
// invited, kicked, banned or leaving server hears of it).
func (sn *Sender) destinations(ctx context.Context, ev *rooms.Event) ([]string, error) {
	var set []string
	add := func(s string) {
		if s != "" && s != sn.Fed.ServerName && !slices.Contains(set, s) {
			set = append(set, s)
		}
	}
	if !ev.Outlier {
		cur, err := sn.Fed.RoomDestinations(ctx, ev.RoomID) // ACL applied
		if err != nil {
			return nil, err
		}
		for _, s := range cur {
			add(s)
		}
	}
	if ev.Type == "m.room.member" && ev.StateKey != nil {
		target := serverOf(id.UserID(*ev.StateKey))
		if !slices.Contains(set, target) {
			if ok, err := sn.Fed.aclAllows(ctx, ev.RoomID, target); err == nil && ok {
				add(target)
			}
		}
	}
	return set, nil
}

// Enqueue queues an event for the servers in its room except those named.
func (sn *Sender) Enqueue(ctx context.Context, ev *rooms.Event, except ...string) error {
	if sn.Q == nil {
		return nil
	}
	dests, err := sn.destinations(ctx, ev)
	if err != nil {
		return err
	}
	var msgs []queue.Message
	for _, d := range dests {
		if slices.Contains(except, d) {
			continue
		}
		sk := fmt.Sprintf("%s%016d#%s", outPrefix, ev.Pos, ev.EventID)
		if err := sn.Fed.T.Put(ctx, table.Item{PK: destPK(d), SK: sk, Data: []byte(ev.EventID)}, table.Cond{}); err != nil {
			return err
		}
		msgs = append(msgs, sn.wake(d, string(ev.EventID)))
	}
	if len(msgs) == 0 {
		return nil
	}
	sn.Fed.Log.Debug("queued for federation", "event_id", ev.EventID, "destinations", len(msgs))
	return sn.Q.Send(ctx, msgs...)
}

// pending returns the destination's transaction in flight, forming one
// from its outbox if there is none (nil when the outbox is empty).
func (sn *Sender) pending(ctx context.Context, dest string) (*pendingTxn, int64, error) {
	k := table.Key{PK: destPK(dest), SK: "txn"}
	for attempt := 0; attempt < 3; attempt++ {
		it, err := sn.Fed.T.Get(ctx, k)
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
		page, err := sn.Fed.T.Query(ctx, table.Query{PK: destPK(dest), Prefix: outPrefix, Limit: MaxPDUsPerTxn})
		if err != nil {
			return nil, 0, err
		}
		edus, err := outbox.Live(ctx, sn.Fed.T, destPK(dest), eduPrefix, MaxEDUsPerTxn)
		if err != nil {
			return nil, 0, err
		}
		if len(page.Items) == 0 && len(edus) == 0 {
			return nil, 0, nil
		}
		now := sn.Fed.now()
		// The id is unique per destination for far longer than receivers
		// remember ids (a day): time, then a random part.
		t := pendingTxn{TxnID: strconv.FormatInt(now.UnixMilli(), 10) + "." + randomHex(4)}
		for _, item := range page.Items {
			t.SKs = append(t.SKs, item.SK)
			t.Events = append(t.Events, id.EventID(item.Data))
		}
		budget := maxEDUBytesPerTxn
		for _, item := range edus {
			if budget -= len(item.Data); budget < 0 && len(t.EDUSKs) > 0 {
				break
			}
			t.EDUSKs = append(t.EDUSKs, item.SK)
		}
		d, _ := json.Marshal(t)
		// The version is unique per transaction, so a slow worker finishing
		// an old transaction cannot delete a newer one.
		ver := now.UnixNano()
		err = sn.Fed.T.Put(ctx, table.Item{PK: k.PK, SK: k.SK, Data: d, Version: ver}, table.IfNotExists())
		if err == nil {
			return &t, ver, nil
		}
		if !errors.Is(err, table.ErrConditionFailed) {
			return nil, 0, err
		}
	}
	return nil, 0, errors.New("federation: could not form a transaction")
}

// send delivers one transaction.
func (sn *Sender) send(ctx context.Context, dest string, t *pendingTxn) error {
	evs, err := sn.Fed.Rooms.EventsByID(ctx, t.Events)
	if err != nil {
		return err
	}
	pdus := make([]json.RawMessage, 0, len(evs))
	for _, ev := range evs {
		pdus = append(pdus, ev.PDU)
	}
	edus, err := outbox.Contents(ctx, sn.Fed.T, destPK(dest), t.EDUSKs)
	if err != nil {
		return err
	}
	if len(pdus) == 0 && len(edus) == 0 {
		return nil // only stale EDUs: nothing left to say
	}
	req := &mfed.ReqSendTransaction{Destination: dest, TxnID: t.TxnID, Origin: sn.Fed.ServerName,
		OriginServerTS: jsontime.UM(sn.Fed.now()), PDUs: pdus, EDUs: edus}
	resp, err := sn.Fed.Client.SendTransaction(ctx, req)
	if err != nil {
		return err
	}
	for eid, r := range resp.PDUs {
		if r.Error != "" {
			sn.Fed.Log.Info("destination did not accept an event", "destination", dest, "event_id", eid, "err", r.Error)
		}
	}
	return nil
}

// permanent reports errors not worth retrying: the destination understood
// and refused the transaction.
func permanent(err error) bool {
	switch remoteStatus(err) {
	case http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound, http.StatusRequestEntityTooLarge:
		return true
	}
	return false
}
