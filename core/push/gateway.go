package push

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/rooms"
)

// Gateway sends notifications to the users' HTTP pushers
// (POST /_matrix/push/v1/notify of the push gateway API).
type Gateway struct {
	Pushers *Pushers
	Client  *http.Client
	Log     *slog.Logger
	// Attempts per pusher (default 3); the wait doubles from Backoff
	// (default 500 ms) after each failure.
	Attempts int
	Backoff  time.Duration
}

type gatewayDevice struct {
	AppID     string         `json:"app_id"`
	PushKey   string         `json:"pushkey"`
	PushKeyTS int64          `json:"pushkey_ts,omitempty"`
	Data      map[string]any `json:"data,omitempty"`
	Tweaks    map[string]any `json:"tweaks,omitempty"`
}

type gatewayNotification struct {
	EventID id.EventID      `json:"event_id"`
	RoomID  id.RoomID       `json:"room_id"`
	Type    string          `json:"type,omitempty"`
	Sender  id.UserID       `json:"sender,omitempty"`
	Target  *bool           `json:"user_is_target,omitempty"`
	Prio    string          `json:"prio"`
	Content json.RawMessage `json:"content,omitempty"`
	Devices []gatewayDevice `json:"devices"`
}

// tweaks collects the set_tweak actions (highlight without a value is true).
func tweaks(actions []json.RawMessage) map[string]any {
	out := map[string]any{}
	for _, a := range actions {
		var obj map[string]any
		if json.Unmarshal(a, &obj) != nil {
			continue
		}
		name, _ := obj["set_tweak"].(string)
		if name == "" {
			continue
		}
		v, ok := obj["value"]
		if !ok && name == "highlight" {
			v = true
		}
		out[name] = v
	}
	return out
}

// Notify sends ev to every HTTP pusher of u, one request per pusher,
// retrying failures with backoff; pushkeys the gateway rejects are removed.
func (g *Gateway) Notify(ctx context.Context, u id.UserID, ev *rooms.Event, actions []json.RawMessage) error {
	_, err := g.notify(ctx, u, ev, actions)
	return err
}

// notify is Notify, also telling how many HTTP pushers u has (0: nothing
// was to be sent).
func (g *Gateway) notify(ctx context.Context, u id.UserID, ev *rooms.Event, actions []json.RawMessage) (int, error) {
	ps, err := g.Pushers.List(ctx, u)
	if err != nil {
		return 0, err
	}
	count := 0
	tw := tweaks(actions)
	for _, p := range ps {
		if p.Kind != "http" {
			continue
		}
		count++
		var data map[string]any
		_ = json.Unmarshal(p.Data, &data)
		url, _ := data["url"].(string)
		format, _ := data["format"].(string)
		delete(data, "url")
		n := gatewayNotification{EventID: ev.EventID, RoomID: ev.RoomID, Prio: "low",
			Devices: []gatewayDevice{{AppID: p.AppID, PushKey: p.PushKey, Data: data, Tweaks: tw}}}
		if len(tw) > 0 {
			n.Prio = "high"
		}
		if format != "event_id_only" {
			n.Type, n.Sender, n.Content = ev.Type, ev.Sender, ev.Content
			if ev.StateKey != nil && ev.Type == "m.room.member" {
				target := id.UserID(*ev.StateKey) == u
				n.Target = &target
			}
		}
		body, _ := json.Marshal(map[string]any{"notification": n})
		rejected, err := g.post(ctx, url, body)
		if err != nil {
			if g.Log != nil {
				g.Log.Warn("push gateway failed", "user", u, "app_id", p.AppID, "err", err)
			}
			continue
		}
		for _, k := range rejected {
			if k == p.PushKey {
				if err := g.Pushers.Delete(ctx, u, p.AppID, p.PushKey); err != nil {
					return count, err
				}
			}
		}
	}
	return count, nil
}

func (g *Gateway) post(ctx context.Context, url string, body []byte) ([]string, error) {
	client := g.Client
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	attempts, wait := g.Attempts, g.Backoff
	if attempts <= 0 {
		attempts = 3
	}
	if wait <= 0 {
		wait = 500 * time.Millisecond
	}
	var last error
	for i := 0; i < attempts; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(wait):
			}
			wait *= 2
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			last = err
			continue
		}
		var out struct {
			Rejected []string `json:"rejected"`
		}
		derr := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 1<<20)).Decode(&out)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			last = fmt.Errorf("gateway answered %s", resp.Status)
			if resp.StatusCode/100 == 4 && resp.StatusCode != http.StatusTooManyRequests {
				return nil, last // a client error will not heal by retrying
			}
			continue
		}
		if derr != nil {
			return nil, nil // delivered; an unreadable answer rejects nothing
		}
		return out.Rejected, nil
	}
	return nil, last
}
