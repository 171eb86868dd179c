package push

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/internal/testtable"
)

func TestGatewayDelivery(t *testing.T) {
	var mu sync.Mutex
	var bodies []map[string]any
	fails := 1 // the first request fails: delivery retries
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path != "/_matrix/push/v1/notify" || r.Method != http.MethodPost {
			t.Errorf("%s %s", r.Method, r.URL.Path)
		}
		if fails > 0 {
			fails--
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		var b map[string]any
		_ = json.NewDecoder(r.Body).Decode(&b)
		bodies = append(bodies, b)
		dev := b["notification"].(map[string]any)["devices"].([]any)[0].(map[string]any)
		if dev["pushkey"] == "bad" {
			_, _ = w.Write([]byte(`{"rejected":["bad"]}`))
			return
		}
		_, _ = w.Write([]byte(`{"rejected":[]}`))
	}))
	defer srv.Close()
	url := srv.URL + "/_matrix/push/v1/notify"

	ctx := context.Background()
	ps := &Pushers{T: testtable.Open(t, testtable.Engines[0])}
	full, _ := json.Marshal(map[string]any{"url": url, "custom": "x"})
	idOnly, _ := json.Marshal(map[string]any{"url": url, "format": "event_id_only"})
	for _, p := range []Pusher{
		{PushKey: "good", Kind: "http", AppID: "a", Lang: "en", Data: full},
		{PushKey: "bad", Kind: "http", AppID: "a", Lang: "en", Data: idOnly},
	} {
		if err := ps.Set(ctx, "@u:x", p, false); err != nil {
			t.Fatal(err)
		}
	}
	g := &Gateway{Pushers: ps, Backoff: time.Millisecond}
	ev := &rooms.Event{EventID: "$e", RoomID: "!r:x", Type: "m.room.message", Sender: "@s:x", Content: json.RawMessage(`{"body":"hi"}`)}
	actions := []json.RawMessage{json.RawMessage(`"notify"`), json.RawMessage(`{"set_tweak":"highlight"}`)}
	if err := g.Notify(ctx, "@u:x", ev, actions); err != nil {
		t.Fatal(err)
	}
	if len(bodies) != 2 {
		t.Fatalf("%d deliveries", len(bodies))
	}
	for _, b := range bodies {
		n := b["notification"].(map[string]any)
		dev := n["devices"].([]any)[0].(map[string]any)
		data, _ := dev["data"].(map[string]any)
		if n["event_id"] != "$e" || n["room_id"] != "!r:x" || n["prio"] != "high" || data["url"] != nil {
			t.Errorf("notification %v", n)
		}
		if dev["tweaks"].(map[string]any)["highlight"] != true {
			t.Errorf("tweaks %v", dev["tweaks"])
		}
		switch dev["pushkey"] {
		case "good":
			if n["type"] != "m.room.message" || n["sender"] != "@s:x" || n["content"] == nil || data["custom"] != "x" {
				t.Errorf("full format: %v", n)
			}
		case "bad":
			if n["type"] != nil || n["content"] != nil || data["format"] != "event_id_only" {
				t.Errorf("event_id_only format: %v", n)
			}
		}
	}
	left, err := ps.List(ctx, "@u:x")
	if err != nil || len(left) != 1 || left[0].PushKey != "good" {
		t.Fatalf("pushers after a rejection: %+v %v", left, err)
	}
}
