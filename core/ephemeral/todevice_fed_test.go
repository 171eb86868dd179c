package ephemeral

import (
	"context"
	"encoding/json"
	"strings"
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

func TestSplitToDevice(t *testing.T) {
	big := json.RawMessage(`"` + strings.Repeat("x", 25*1024) + `"`)
	huge := json.RawMessage(`"` + strings.Repeat("y", 100*1024) + `"`)
	tests := []struct {
		name  string
		msgs  map[id.UserID]map[id.DeviceID]json.RawMessage
		parts int
	}{
		{"small stays whole", map[id.UserID]map[id.DeviceID]json.RawMessage{"@b:y": {"B1": json.RawMessage(`{}`), "B2": json.RawMessage(`{}`)}}, 1},
		{"five 25 KiB messages", map[id.UserID]map[id.DeviceID]json.RawMessage{"@b:y": {"B1": big, "B2": big, "B3": big}, "@c:y": {"C1": big, "C2": big}}, 3},
		{"one oversized message goes alone", map[id.UserID]map[id.DeviceID]json.RawMessage{"@b:y": {"B1": huge, "B2": json.RawMessage(`{}`)}}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			parts := splitToDevice("@a:x", "m.test", "mid", tc.msgs)
			again := splitToDevice("@a:x", "m.test", "mid", tc.msgs)
			if len(parts) != tc.parts {
				t.Fatalf("%d parts, want %d", len(parts), tc.parts)
			}
			ids, count := map[string]bool{}, 0
			for i, p := range parts {
				if p.MessageID != again[i].MessageID || ids[p.MessageID] {
					t.Fatalf("part %d message id %q: not unique or not stable", i, p.MessageID)
				}
				ids[p.MessageID] = true
				if tc.parts == 1 && p.MessageID != "mid" {
					t.Fatalf("a whole EDU changed its message id to %q", p.MessageID)
				}
				size, inPart := 0, 0
				for u, byDev := range p.Messages {
					for d, m := range byDev {
						if string(tc.msgs[u][d]) != string(m) {
							t.Fatalf("message for %s/%s changed", u, d)
						}
						size += len(m)
						count++
						inPart++
					}
				}
				if size > maxToDeviceEDUBytes && inPart > 1 {
					t.Fatalf("part %d holds %d bytes in several messages", i, size)
				}
			}
			want := 0
			for _, byDev := range tc.msgs {
				want += len(byDev)
			}
			if count != want {
				t.Fatalf("%d messages in the parts, want %d", count, want)
			}
		})
	}
}
