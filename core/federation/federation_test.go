package federation

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/core/signing"
)

func TestACLAllows(t *testing.T) {
	cases := []struct {
		acl, server string
		want        bool
	}{
		{`{"allow":["*"]}`, "example.org", true},
		{`{"allow":["*"]}`, "example.org:8448", true},
		{`{}`, "example.org", false}, // no allow list: nobody
		{`{"allow":["*"],"deny":["evil.com"]}`, "evil.com:443", false},
		{`{"allow":["*"],"deny":["*.evil.com"]}`, "a.evil.com", false},
		{`{"allow":["*"],"deny":["*.evil.com"]}`, "evil.com", true},
		{`{"allow":["*.org"]}`, "example.com", false},
		{`{"allow":["ex?mple.org"]}`, "example.org", true},
		{`{"allow":["*"],"allow_ip_literals":false}`, "1.2.3.4:8448", false},
		{`{"allow":["*"],"allow_ip_literals":false}`, "[::1]:8448", false},
		{`{"allow":["*"]}`, "1.2.3.4", true},
		{`{"allow":["*"],"deny":["127.0.0.1"]}`, "127.0.0.1:1234", false},
		{`{"allow":["EXAMPLE.org"]}`, "example.ORG", true},
		{`{"allow":["[a]"]}`, "a", false}, // brackets are literal
	}
	for _, c := range cases {
		if got := ACLAllows(json.RawMessage(c.acl), c.server); got != c.want {
			t.Errorf("ACL %s, server %s: %v, want %v", c.acl, c.server, got, c.want)
		}
	}
}

func TestAddSignature(t *testing.T) {
	own, _ := signing.Generate()
	raw, err := OwnKeys("other.example", own, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	notary, _ := signing.Generate()
	co, err := addSignature(raw, "notary.example", notary)
	if err != nil {
		t.Fatal(err)
	}
	var sigs struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	_ = json.Unmarshal(co, &sigs)
	if len(sigs.Signatures) != 2 {
		t.Fatalf("signatures %v", sigs.Signatures)
	}
}

func TestProcessPDUsUnknownRoom(t *testing.T) {
	s, _ := testService(t)
	// A room version 1 event carries its id: the answer names it by that
	// id, not by a hash computed as for a current room version.
	v1 := json.RawMessage(`{"event_id":"$abc:elsewhere.example","room_id":"!unknown:elsewhere.example","type":"m.room.message",` +
		`"sender":"@a:elsewhere.example","content":{},"depth":3,"origin_server_ts":1,"prev_events":[],"auth_events":[],"hashes":{"sha256":"x"},"signatures":{}}`)
	got := s.ProcessPDUs(context.Background(), "elsewhere.example", []json.RawMessage{v1})
	r, ok := got["$abc:elsewhere.example"]
	if len(got) != 1 || !ok || !strings.Contains(r.Error, "unknown room") {
		t.Fatalf("results %v, want an unknown-room error for $abc:elsewhere.example", got)
	}
}
