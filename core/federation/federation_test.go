package federation

import (
	"encoding/json"
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
