package ephemeral

import (
	"context"
	"encoding/json"
	"testing"

	"maunium.net/go/mautrix/id"
)

func TestToDeviceAcrossServers(t *testing.T) {
	forEngines(t, func(t *testing.T, s *Service) {
		ctx := context.Background()
		type sent struct {
			dests []string
			edu   DirectToDevice
		}
		var out []sent
		s.SendEDU = func(_ context.Context, dests []string, typ string, content any) error {
			if typ != EDUDirectToDevice {
				t.Fatalf("EDU type %s", typ)
			}
			out = append(out, sent{dests, content.(DirectToDevice)})
			return nil
		}
		msgs := map[id.UserID]map[id.DeviceID]json.RawMessage{
			"@bob:x":      {"B1": json.RawMessage(`{"n":1}`)},
			"@carol:y":    {"*": json.RawMessage(`{"n":2}`)},
			"@dave:z.org": {"D1": json.RawMessage(`{"n":3}`)},
		}
		if err := s.SendToDevice(ctx, "@a:x", "A1", "t1", "m.test", msgs); err != nil {
			t.Fatal(err)
		}
		if err := s.SendToDevice(ctx, "@a:x", "A1", "t1", "m.test", msgs); err != nil {
			t.Fatal(err)
		}
		if len(out) != 2 {
			t.Fatalf("%d EDUs for two servers (a repeated txn sends nothing)", len(out))
		}
		for _, o := range out {
			if len(o.dests) != 1 || o.edu.MessageID == "" || o.edu.Sender != "@a:x" || len(o.edu.Messages) != 1 {
				t.Fatalf("EDU %+v", o)
			}
			if _, ok := o.edu.Messages["@bob:x"]; ok {
				t.Fatal("a local user's message went to another server")
			}
		}
		if got, _, _ := s.ToDevice(ctx, "@bob:x", "B1", 0, 10); len(got) != 1 {
			t.Fatalf("local delivery: %d", len(got))
		}

		// Inbound: delivered once per (sender, message id), only from the
		// sender's own server.
		edu := func(sender id.UserID, msgID string) json.RawMessage {
			b, _ := json.Marshal(DirectToDevice{Sender: sender, Type: "m.test", MessageID: msgID,
				Messages: map[id.UserID]map[id.DeviceID]json.RawMessage{"@bob:x": {"*": json.RawMessage(`{"in":true}`)}, "@eve:y": {"E": json.RawMessage(`{}`)}}})
			return b
		}
		for range 2 {
			if err := s.ReceiveToDevice(ctx, "y", edu("@carol:y", "m1")); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.ReceiveToDevice(ctx, "z.org", edu("@carol:y", "m2")); err == nil {
			t.Fatal("a server sent messages for another server's user")
		}
		if err := s.ReceiveToDevice(ctx, "y", edu("@carol:y", "m3")); err != nil {
			t.Fatal(err)
		}
		for _, d := range []id.DeviceID{"B1", "B2"} {
			got, _, err := s.ToDevice(ctx, "@bob:x", d, 0, 10)
			if err != nil {
				t.Fatal(err)
			}
			in := 0
			for _, m := range got {
				if m.Sender == "@carol:y" {
					in++
				}
			}
			if in != 2 {
				t.Fatalf("device %s got %d remote messages, want 2 (m1 once, m3)", d, in)
			}
		}
	})
}
