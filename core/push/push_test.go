package push

import (
	"encoding/json"
	"testing"

	"maunium.net/go/mautrix/event"
)

func ids(rs []*Rule) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.RuleID)
	}
	return out
}

func TestDefaults(t *testing.T) {
	rs := Defaults("@al\"ice:example.org")
	want := map[string][]string{
		"override": {".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.member_event",
			".m.rule.is_user_mention", ".m.rule.contains_display_name", ".m.rule.is_room_mention", ".m.rule.roomnotif",
			".m.rule.tombstone", ".m.rule.reaction", ".m.rule.room.server_acl", ".m.rule.suppress_edits"},
		"content":   {".m.rule.contains_user_name"},
		"underride": {".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one", ".m.rule.message", ".m.rule.encrypted"},
	}
	for kind, w := range want {
		got := ids(*rs.list(kind))
		if len(got) != len(w) {
			t.Fatalf("%s: %v", kind, got)
		}
		for i := range w {
			if got[i] != w[i] {
				t.Fatalf("%s: %v", kind, got)
			}
		}
	}
	if p := rs.Find("content", ".m.rule.contains_user_name").Pattern; p == nil || *p != `al"ice` {
		t.Fatalf("localpart pattern %v", p)
	}
}

func TestMergeKeepsUserRulesAndDefaultChanges(t *testing.T) {
	stored := json.RawMessage(`{"global":{"override":[
		{"rule_id":".m.rule.master","default":true,"enabled":true,"conditions":[],"actions":[]},
		{"rule_id":"mine","default":true,"enabled":true,"conditions":[],"actions":["notify"]},
		{"rule_id":".m.rule.gone","default":true,"enabled":true,"actions":[]}],
		"underride":[{"rule_id":".m.rule.message","default":true,"enabled":false,"actions":[]}]}}`)
	rs := Merge("@a:x", stored)
	if got := ids(rs.Override); len(got) != 13 || got[0] != ".m.rule.master" || got[1] != "mine" {
		t.Fatalf("override %v", got)
	}
	if !rs.Override[0].Enabled || rs.Override[1].Default {
		t.Fatalf("master enabled %v, user rule default %v", rs.Override[0].Enabled, rs.Override[1].Default)
	}
	if m := rs.Find("underride", ".m.rule.message"); m.Enabled || len(m.Actions) != 0 {
		t.Fatalf("message rule %+v", m)
	}
	if rs.Room == nil || rs.Sender == nil {
		t.Fatal("empty kinds must be [] not null")
	}
	if bad := Merge("@a:x", json.RawMessage(`not json`)); bad.Find("override", ".m.rule.master") == nil {
		t.Fatal("unreadable content must fall back to the defaults")
	}
}

func TestEvaluation(t *testing.T) {
	rs := Defaults("@alice:x").Evaluable()
	room := &roomView{name: "Alice", count: 3}
	for _, c := range []struct {
		name              string
		typ               string
		content           string
		notify, highlight bool
	}{
		{"message", "m.room.message", `{"msgtype":"m.text","body":"hi"}`, true, false},
		{"notice", "m.room.message", `{"msgtype":"m.notice","body":"hi"}`, false, false},
		{"mention", "m.room.message", `{"body":"x","m.mentions":{"user_ids":["@alice:x"]}}`, true, true},
		{"display name", "m.room.message", `{"body":"hello Alice!"}`, true, true},
		{"display name with m.mentions", "m.room.message", `{"body":"hello Alice!","m.mentions":{}}`, true, false},
		{"edit", "m.room.message", `{"body":"x","m.relates_to":{"rel_type":"m.replace","event_id":"$e"}}`, false, false},
		{"reaction", "m.reaction", `{}`, false, false},
		{"other type", "m.custom", `{}`, false, false},
	} {
		ev := &event.Event{Type: event.Type{Type: c.typ}, Sender: "@bob:x", RoomID: "!r:x"}
		_ = json.Unmarshal([]byte(c.content), &ev.Content.Raw)
		should := rs.GetMatchingRule(room, ev).GetActions().Should()
		if should.Notify != c.notify || should.Highlight != c.highlight {
			t.Errorf("%s: notify %v highlight %v", c.name, should.Notify, should.Highlight)
		}
	}
}

func TestValidPushURL(t *testing.T) {
	for u, ok := range map[string]bool{
		"https://push.example/_matrix/push/v1/notify":      true,
		"http://localhost:8080/_matrix/push/v1/notify":     true,
		"https://push.example/_matrix/push/v1/notify?x=1":  true,
		"https://push.example/_matrix/push/v1/notify/more": false,
		"https://push.example":                             false,
		"https:///_matrix/push/v1/notify":                  false,
		"ftp://push.example/_matrix/push/v1/notify":        false,
	} {
		if ValidPushURL(u) != ok {
			t.Errorf("%s: want %v", u, ok)
		}
	}
}
