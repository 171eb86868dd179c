package search

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// The searchable keys (the spec's `keys`), one per indexed event type.
const (
	KeyBody  = "content.body"  // m.room.message
	KeyName  = "content.name"  // m.room.name
	KeyTopic = "content.topic" // m.room.topic (also its m.topic text/plain body)
)

// EventType is the event type each key is found in.
var EventType = map[string]string{KeyBody: "m.room.message", KeyName: "m.room.name", KeyTopic: "m.room.topic"}

// EpochBits sets how many event stream positions share one partition of a
// term: 2^20 (about a million events). A term's postings are split by
// epoch so that no partition grows without bound however common the word,
// and a search walks epochs newest first, usually stopping in the first.
const EpochBits = 20

func epochOf(pos int64) int64 { return pos >> EpochBits }

// Key layout (ARCHITECTURE.md, "Key schema"). Terms are runs of letters
// and digits, so '#' cannot occur in one.
func postingPK(term string, epoch int64) string { return fmt.Sprintf("srch#%s#%d", term, epoch) }
func postingSK(pos int64) string                { return fmt.Sprintf("%016d", pos) }

// Doc is one searchable text: an event's indexed field with what a search
// needs to filter and rank it without reading the event.
type Doc struct {
	EventID id.EventID
	RoomID  id.RoomID
	Sender  id.UserID
	// Pos is the event's position in the server's event stream: unique per
	// event and increasing, so it orders results by recency.
	Pos int64
	// StateGroup is the state before the event (history visibility is
	// decided from it).
	StateGroup string
	Key        string // KeyBody, KeyName or KeyTopic
	Text       string
	HasURL     bool // content.url is set (the filter's contains_url)
}

// posting is one (term, event) item of the index.
type posting struct {
	EventID    id.EventID
	RoomID     id.RoomID
	Sender     id.UserID
	Key        string
	TF         int
	Len        int
	StateGroup string
	HasURL     bool
	pos        int64
}

// keyCodes shorten the key in postings.
var keyCodes = map[string]string{KeyBody: "b", KeyName: "n", KeyTopic: "t"}

// encode writes a posting as fields separated by \x1f (which no Matrix
// identifier may hold) rather than JSON: a search decodes postings by the
// thousand, and JSON decoding was half of a query's time.
func (p *posting) encode() []byte {
	u := ""
	if p.HasURL {
		u = "1"
	}
	return []byte(strings.Join([]string{string(p.EventID), string(p.RoomID), string(p.Sender), keyCodes[p.Key],
		strconv.Itoa(p.TF), strconv.Itoa(p.Len), p.StateGroup, u}, "\x1f"))
}

func decodePosting(b []byte, p *posting) error {
	// Eight fields: a separator after each but the last.
	var f [8]string
	rest := string(b)
	for i := range f {
		var ok bool
		if f[i], rest, ok = strings.Cut(rest, "\x1f"); ok != (i < len(f)-1) {
			return fmt.Errorf("search: a posting has the wrong number of fields")
		}
	}
	var err1, err2 error
	p.EventID, p.RoomID, p.Sender, p.StateGroup, p.HasURL = id.EventID(f[0]), id.RoomID(f[1]), id.UserID(f[2]), f[6], f[7] == "1"
	p.TF, err1 = strconv.Atoi(f[4])
	p.Len, err2 = strconv.Atoi(f[5])
	p.Key = ""
	for k, c := range keyCodes {
		if c == f[3] {
			p.Key = k
		}
	}
	if err1 != nil || err2 != nil || p.Key == "" {
		return fmt.Errorf("search: a posting is malformed")
	}
	return nil
}

// DocOf returns the searchable text of an event, if it has one: the body
// of an m.room.message, the name of an m.room.name, the topic of an
// m.room.topic. Events outside the timeline (outliers, rejected,
// soft-failed) and redacted events have none; encrypted events carry no
// readable text and so are never indexed.
func DocOf(ev *rooms.Event) (Doc, bool) {
	if ev == nil || ev.Outlier || ev.Rejected || ev.SoftFailed || ev.RedactedBy != "" || ev.Pos <= 0 {
		return Doc{}, false
	}
	d := Doc{EventID: ev.EventID, RoomID: ev.RoomID, Sender: ev.Sender, Pos: ev.Pos, StateGroup: ev.StateBefore}
	var c struct {
		Body   any `json:"body"`
		Name   any `json:"name"`
		Topic  any `json:"topic"`
		URL    any `json:"url"`
		MTopic any `json:"m.topic"`
	}
	if json.Unmarshal(ev.Content, &c) != nil {
		return Doc{}, false
	}
	str := func(v any) string { s, _ := v.(string); return s }
	switch {
	case ev.Type == "m.room.message" && !ev.IsState():
		d.Key, d.Text, d.HasURL = KeyBody, str(c.Body), c.URL != nil
	case ev.Type == "m.room.name" && ev.IsState() && *ev.StateKey == "":
		d.Key, d.Text = KeyName, str(c.Name)
	case ev.Type == "m.room.topic" && ev.IsState() && *ev.StateKey == "":
		parts := []string{str(c.Topic)}
		if blocks, ok := c.MTopic.(map[string]any); ok {
			if list, ok := blocks["m.text"].([]any); ok {
				for _, b := range list {
					if m, ok := b.(map[string]any); ok {
						if mime := str(m["mimetype"]); mime == "" || mime == "text/plain" {
							parts = append(parts, str(m["body"]))
						}
					}
				}
			}
		}
		d.Key, d.Text = KeyTopic, strings.Join(parts, "\n")
	default:
		return Doc{}, false
	}
	if strings.TrimSpace(d.Text) == "" {
		return Doc{}, false
	}
	return d, true
}

// Index is the inverted index: one item per (term, event) in the partition
// of the term and the event's epoch, sorted by stream position.
type Index struct {
	T table.Table
	// Rooms reads events back (redaction targets, the current state of a
	// redelivered event). Only OnEvent needs it.
	Rooms *rooms.Service
	// Parallel is how many writes one event issues at once (default 8).
	Parallel int
}

func (x *Index) postings(d Doc) []table.Item {
	tf, n := Terms(d.Text)
	items := make([]table.Item, 0, len(tf))
	for t, f := range tf {
		b := (&posting{EventID: d.EventID, RoomID: d.RoomID, Sender: d.Sender, Key: d.Key,
			TF: f, Len: n, StateGroup: d.StateGroup, HasURL: d.HasURL}).encode()
		items = append(items, table.Item{PK: postingPK(t, epochOf(d.Pos)), SK: postingSK(d.Pos), Data: b})
	}
	return items
}

// each runs f over items with at most x.Parallel in flight and returns the
// first error. Plain writes, not a transaction: every posting is
// independent and rewriting one is harmless, and on DynamoDB a
// transactional write costs twice as much.
func (x *Index) each(ctx context.Context, items []table.Item, f func(context.Context, table.Item) error) error {
	par := x.Parallel
	if par <= 0 {
		par = 8
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		sem   = make(chan struct{}, par)
	)
	for _, it := range items {
		sem <- struct{}{}
		wg.Add(1)
		go func(it table.Item) {
			defer func() { <-sem; wg.Done() }()
			if err := f(ctx, it); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}(it)
	}
	wg.Wait()
	return first
}

// Add indexes a document. It is idempotent: the items' keys and contents
// depend only on the document.
func (x *Index) Add(ctx context.Context, d Doc) error {
	return x.each(ctx, x.postings(d), func(ctx context.Context, it table.Item) error {
		return x.T.Put(ctx, it, table.Cond{})
	})
}

// Remove deletes a document's postings (idempotent).
func (x *Index) Remove(ctx context.Context, d Doc) error {
	return x.each(ctx, x.postings(d), func(ctx context.Context, it table.Item) error {
		return x.T.Delete(ctx, it.Key(), table.Cond{})
	})
}

// AddBulk indexes many documents in transactions of up to table.MaxTxItems
// postings: for building an index from existing history, where fewer,
// larger writes matter more than their price.
func (x *Index) AddBulk(ctx context.Context, docs []Doc) error {
	var ops []table.Op
	seen := map[table.Key]bool{}
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		err := x.T.Transact(ctx, ops)
		ops, seen = ops[:0], map[table.Key]bool{}
		return err
	}
	for _, d := range docs {
		for _, it := range x.postings(d) {
			if seen[it.Key()] {
				continue
			}
			if len(ops) == table.MaxTxItems {
				if err := flush(); err != nil {
					return err
				}
			}
			seen[it.Key()] = true
			ops = append(ops, table.Put(it, table.Cond{}))
		}
	}
	return flush()
}

// OnEvent is the fan-out handler (core/fanout): it indexes a searchable
// event and, for a redaction, removes its target from the index. The
// fan-out worker loads each event from the table just before its handlers
// run and handles events in stream order, so a redaction is handled after
// the event it redacts; a handler run again later (redelivery) sees the
// event as redacted and removes it rather than indexing it. Every write is
// idempotent.
func (x *Index) OnEvent(ctx context.Context, ev *rooms.Event) error {
	if ev.Type == "m.room.redaction" && ev.Redacts != "" {
		got, err := x.Rooms.EventsByID(ctx, []id.EventID{ev.Redacts})
		if err != nil || len(got) == 0 {
			return err
		}
		if target := got[0]; target.RoomID == ev.RoomID && target.RedactedBy != "" {
			return x.removeEvent(ctx, target)
		}
		return nil
	}
	if ev.RedactedBy != "" {
		return x.removeEvent(ctx, ev)
	}
	if d, ok := DocOf(ev); ok {
		return x.Add(ctx, d)
	}
	return nil
}

// removeEvent deletes the postings of a redacted event, computed from its
// original content (the engine keeps it, marked redacted).
func (x *Index) removeEvent(ctx context.Context, ev *rooms.Event) error {
	cp := *ev
	cp.RedactedBy = ""
	if d, ok := DocOf(&cp); ok {
		return x.Remove(ctx, d)
	}
	return nil
}
