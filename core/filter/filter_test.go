package filter

import (
	"encoding/json"
	"errors"
	"testing"

	"maunium.net/go/mautrix/id"
)

func TestTypeWildcards(t *testing.T) {
	cases := []struct {
		pattern, typ string
		want         bool
	}{
		{"m.room.message", "m.room.message", true},
		{"m.room.message", "m.room.member", false},
		{"m.room.*", "m.room.member", true},
		{"m.room.*", "m.roomx", false},
		{"*", "anything", true},
		{"m.*.message", "m.room.message", true},
		{"m.*.message", "m.room.member", false},
		{"*.tag", "m.tag", true},
		{"m.room.*", "m.room.", true},
	}
	for _, c := range cases {
		if got := typeMatches(c.pattern, c.typ); got != c.want {
			t.Errorf("%q ~ %q = %v", c.pattern, c.typ, got)
		}
	}
}

func TestEventFilterMatch(t *testing.T) {
	types := []string{"m.room.*"}
	senders := []id.UserID{"@a:x", "@b:x"}
	f := &EventFilter{Types: &types, NotTypes: []string{"m.room.member"}, Senders: &senders, NotSenders: []id.UserID{"@b:x"}}
	cases := []struct {
		typ    string
		sender id.UserID
		want   bool
	}{
		{"m.room.message", "@a:x", true},
		{"m.room.member", "@a:x", false}, // not_types wins over types
		{"m.tag", "@a:x", false},
		{"m.room.message", "@b:x", false}, // not_senders wins over senders
		{"m.room.message", "@c:x", false},
	}
	for _, c := range cases {
		if got := f.Match(c.typ, c.sender); got != c.want {
			t.Errorf("%s from %s: %v", c.typ, c.sender, got)
		}
	}
	var none *EventFilter
	if !none.Match("x", "@a:x") || !none.MatchType("x") {
		t.Fatal("a nil filter keeps everything")
	}
	empty := []string{}
	if (&EventFilter{Types: &empty}).MatchType("m.room.message") {
		t.Fatal("an empty types list keeps nothing")
	}
}

func TestRoomEventFilter(t *testing.T) {
	yes, no := true, false
	rooms := []id.RoomID{"!a:x", "!b:x"}
	f := &RoomEventFilter{Rooms: &rooms, NotRooms: []id.RoomID{"!b:x"}, ContainsURL: &yes}
	withURL := json.RawMessage(`{"url":"mxc://x/y"}`)
	if !f.Match(Event{Type: "m.room.message", RoomID: "!a:x", Content: withURL}) {
		t.Fatal("matching event refused")
	}
	if f.Match(Event{Type: "m.room.message", RoomID: "!b:x", Content: withURL}) {
		t.Fatal("not_rooms ignored")
	}
	if f.Match(Event{Type: "m.room.message", RoomID: "!a:x", Content: json.RawMessage(`{}`)}) {
		t.Fatal("contains_url=true kept an event without url")
	}
	f.ContainsURL = &no
	if f.Match(Event{Type: "m.room.message", RoomID: "!a:x", Content: withURL}) {
		t.Fatal("contains_url=false kept an event with url")
	}
}

func TestParseAndValidate(t *testing.T) {
	good := []string{`{}`, `{"room":{"timeline":{"limit":5,"types":["m.room.*"]},"include_leave":true}}`,
		`{"event_format":"federation","event_fields":["content.body","type"]}`,
		`{"room":{"state":{"lazy_load_members":true,"include_redundant_members":true}}}`,
		`{"presence":{"not_senders":["@a:x"]},"account_data":{"types":["m.tag"]}}`}
	for _, s := range good {
		if _, err := Parse([]byte(s)); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	bad := []struct {
		body    string
		badJSON bool
	}{
		{`[]`, true},
		{`nope`, true},
		{`{"room":{"timeline":{"limit":"x"}}}`, true},
		{`{"room":{"rooms":"!a:x"}}`, true},
		{`{"event_format":"xml"}`, false},
		{`{"room":{"timeline":{"limit":-1}}}`, false},
		{`{"room":{"state":{"senders":["alice"]}}}`, false},
		{`{"room":{"not_rooms":["#alias:x"]}}`, false},
		{`{"room":{"ephemeral":{"rooms":["x"]}}}`, false},
		{`{"event_fields":[""]}`, false},
		{`{"event_fields":["a..b"]}`, false},
	}
	for _, c := range bad {
		_, err := Parse([]byte(c.body))
		var fe *Error
		if !errors.As(err, &fe) || fe.BadJSON != c.badJSON {
			t.Errorf("%s: %v (want bad JSON %v)", c.body, err, c.badJSON)
		}
	}
}

func TestTimelineLimit(t *testing.T) {
	var nilF *Filter
	if nilF.TimelineLimit() != DefaultTimelineLimit {
		t.Fatal("nil filter limit")
	}
	f := &Filter{}
	if f.TimelineLimit() != DefaultTimelineLimit {
		t.Fatal("default limit")
	}
	f.Room.Timeline.Limit = 3
	if f.TimelineLimit() != 3 {
		t.Fatal("limit")
	}
	f.Room.Timeline.Limit = 1 << 30
	if f.TimelineLimit() != MaxTimelineLimit {
		t.Fatal("limit cap")
	}
	if !f.IncludesRoom("!a:x") {
		t.Fatal("rooms")
	}
	f.Room.NotRooms = []id.RoomID{"!a:x"}
	if f.IncludesRoom("!a:x") {
		t.Fatal("not_rooms")
	}
}

func TestProject(t *testing.T) {
	ev := json.RawMessage(`{"type":"m.room.message","sender":"@a:x","content":{"body":"hi","msgtype":"m.text","m.relates_to":{"rel_type":"m.thread"}},"unsigned":{"age":5},"weird.key":1}`)
	cases := []struct {
		fields []string
		want   string
	}{
		{nil, string(ev)},
		{[]string{"type", "content.body"}, `{"content":{"body":"hi"},"type":"m.room.message"}`},
		{[]string{"content.m\\.relates_to.rel_type"}, `{"content":{"m.relates_to":{"rel_type":"m.thread"}}}`},
		{[]string{"weird\\.key", "missing", "content.missing"}, `{"weird.key":1}`},
		{[]string{"content", "content.body"}, `{"content":{"body":"hi","msgtype":"m.text","m.relates_to":{"rel_type":"m.thread"}}}`},
		{[]string{"type.deeper"}, `{}`},
	}
	for _, c := range cases {
		got := string(Project(ev, c.fields))
		if !jsonEqual(got, c.want) {
			t.Errorf("%v: %s, want %s", c.fields, got, c.want)
		}
	}
}

func TestSplitPath(t *testing.T) {
	cases := map[string][]string{
		"a":            {"a"},
		"a.b":          {"a", "b"},
		`a\.b`:         {"a.b"},
		`a\\.b`:        {`a\`, "b"},
		`content.m\.x`: {"content", "m.x"},
	}
	for in, want := range cases {
		got, ok := splitPath(in)
		if !ok || len(got) != len(want) {
			t.Errorf("%q: %v %v", in, got, ok)
			continue
		}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("%q: %v", in, got)
			}
		}
	}
	for _, in := range []string{"", ".", "a.", ".a", "a..b"} {
		if got, ok := splitPath(in); ok {
			t.Errorf("%q accepted: %v", in, got)
		}
	}
}

func jsonEqual(a, b string) bool {
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	ax, _ := json.Marshal(x)
	by, _ := json.Marshal(y)
	return string(ax) == string(by)
}
