package slidingsync

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/clientsync"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/infra/bolt"
)

const me = id.UserID("@me:hs")

func pairs(ps ...string) RequiredState {
	var rs RequiredState
	for i := 0; i+1 < len(ps); i += 2 {
		if ps[i] == memberType && ps[i+1] == StateKeyLazy {
			rs.Lazy = true
			continue
		}
		rs.Include = append(rs.Include, [2]string{ps[i], ps[i+1]})
	}
	return rs
}

func TestStateSpecMatch(t *testing.T) {
	lazy := map[id.UserID]bool{"@sender:hs": true}
	for _, c := range []struct {
		name      string
		reqs      []RequiredState
		typ, key  string
		want      bool
		wantLazy  bool
		wantEmpty bool
	}{
		{name: "exact pair", reqs: []RequiredState{pairs("m.room.name", "")}, typ: "m.room.name", want: true},
		{name: "other type", reqs: []RequiredState{pairs("m.room.name", "")}, typ: "m.room.topic", want: false},
		{name: "other key", reqs: []RequiredState{pairs("m.room.name", "")}, typ: "m.room.name", key: "x", want: false},
		{name: "type wildcard key", reqs: []RequiredState{pairs("m.call.member", "*")}, typ: "m.call.member", key: "@a:hs", want: true},
		{name: "any type with key", reqs: []RequiredState{pairs("*", "")}, typ: "m.room.topic", want: true},
		{name: "any type wrong key", reqs: []RequiredState{pairs("*", "")}, typ: "m.room.member", key: "@a:hs", want: false},
		{name: "everything", reqs: []RequiredState{pairs("*", "*")}, typ: "m.room.member", key: "@a:hs", want: true},
		{name: "$ME", reqs: []RequiredState{pairs(memberType, StateKeyMe)}, typ: memberType, key: string(me), want: true},
		{name: "$ME not others", reqs: []RequiredState{pairs(memberType, StateKeyMe)}, typ: memberType, key: "@a:hs", want: false},
		{name: "lazy sender", reqs: []RequiredState{pairs(memberType, StateKeyLazy)}, typ: memberType, key: "@sender:hs", want: true, wantLazy: true},
		{name: "lazy non-sender", reqs: []RequiredState{pairs(memberType, StateKeyLazy)}, typ: memberType, key: "@a:hs", want: false, wantLazy: true},
		{name: "wildcard with lazy keeps members lazy", reqs: []RequiredState{pairs("*", "*", memberType, StateKeyLazy)}, typ: memberType, key: "@a:hs", want: false, wantLazy: true},
		{name: "wildcard with lazy keeps other state", reqs: []RequiredState{pairs("*", "*", memberType, StateKeyLazy)}, typ: "m.room.topic", want: true, wantLazy: true},
		{name: "all members beats lazy", reqs: []RequiredState{pairs(memberType, StateKeyLazy), pairs(memberType, "*")}, typ: memberType, key: "@a:hs", want: true},
		{name: "explicit member with lazy", reqs: []RequiredState{pairs(memberType, StateKeyLazy, memberType, "@a:hs")}, typ: memberType, key: "@a:hs", want: true, wantLazy: true},
		{name: "union of two configs", reqs: []RequiredState{pairs("m.room.name", ""), pairs("m.room.topic", "")}, typ: "m.room.topic", want: true},
		{name: "exclude", reqs: []RequiredState{{Include: [][2]string{{"*", "*"}}, Exclude: [][2]string{{"m.room.create", ""}}}}, typ: "m.room.create", want: false},
		{name: "exclude leaves others", reqs: []RequiredState{{Include: [][2]string{{"*", "*"}}, Exclude: [][2]string{{"m.room.create", ""}}}}, typ: "m.room.name", want: true},
		{name: "exclude does not filter lazy", reqs: []RequiredState{{Lazy: true, Exclude: [][2]string{{memberType, "*"}}}}, typ: memberType, key: "@sender:hs", want: true, wantLazy: true},
		{name: "empty", reqs: []RequiredState{{}}, typ: "m.room.name", want: false, wantEmpty: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := NewStateSpec(me, c.reqs...)
			if got := s.Match(c.typ, c.key, lazy); got != c.want {
				t.Errorf("Match(%q, %q) = %v, want %v", c.typ, c.key, got, c.want)
			}
			if s.Lazy() != c.wantLazy {
				t.Errorf("Lazy = %v, want %v", s.Lazy(), c.wantLazy)
			}
			if s.Empty() != c.wantEmpty {
				t.Errorf("Empty = %v, want %v", s.Empty(), c.wantEmpty)
			}
		})
	}
}

func TestStateSpecHash(t *testing.T) {
	a := NewStateSpec(me, pairs("m.room.name", "", "m.room.topic", ""))
	b := NewStateSpec(me, pairs("m.room.topic", ""), pairs("m.room.name", ""))
	c := NewStateSpec(me, pairs("m.room.name", ""))
	if a.Hash(5) != b.Hash(5) {
		t.Error("the same spec in another order hashes differently")
	}
	if a.Hash(5) == c.Hash(5) || a.Hash(5) == a.Hash(6) {
		t.Error("different configs hash alike")
	}
	if hashLimit(a.Hash(7)) != 7 || hashState(a.Hash(7)) != hashState(a.Hash(1)) {
		t.Error("hash parts")
	}
}

func strp(s string) *string { return &s }
func boolp(b bool) *bool    { return &b }

func TestSortAndWindow(t *testing.T) {
	mk := func() []*Entry {
		return []*Entry{
			{ID: "!a:hs", Bump: 10, Membership: "join"},
			{ID: "!b:hs", Bump: 30, Membership: "join", DM: true},
			{ID: "!c:hs", Bump: 20, Membership: "invite"},
			{ID: "!d:hs", Bump: 30, Membership: "join", Encrypted: true},
			{ID: "!e:hs", Bump: 5, Membership: "join", Type: strp("m.space")},
		}
	}
	ids := func(es []*Entry) string {
		s := ""
		for _, e := range es {
			s += string(e.ID[1])
		}
		return s
	}
	for _, c := range []struct {
		name   string
		list   ListConfig
		count  int
		window string
	}{
		{"no ranges: all, by recency then id", ListConfig{}, 5, "bdcae"},
		{"first two", ListConfig{Ranges: [][2]int64{{0, 1}}}, 5, "bd"},
		{"middle", ListConfig{Ranges: [][2]int64{{2, 3}}}, 5, "ca"},
		{"past the end", ListConfig{Ranges: [][2]int64{{3, 99}}}, 5, "ae"},
		{"two ranges overlapping", ListConfig{Ranges: [][2]int64{{3, 4}, {0, 0}, {4, 4}}}, 5, "bae"},
		{"start past the end", ListConfig{Ranges: [][2]int64{{10, 20}}}, 5, ""},
		{"dm", ListConfig{Filters: &Filters{IsDM: boolp(true)}}, 1, "b"},
		{"not dm", ListConfig{Filters: &Filters{IsDM: boolp(false)}}, 4, "dcae"},
		{"invites (is_invite)", ListConfig{Filters: &Filters{IsInvite: boolp(true)}}, 1, "c"},
		{"no invites (is_invited)", ListConfig{Filters: &Filters{IsInvited: boolp(false)}}, 4, "bdae"},
		{"encrypted", ListConfig{Filters: &Filters{IsEncrypted: boolp(true)}}, 1, "d"},
		{"spaces only", ListConfig{Filters: &Filters{RoomTypes: &[]*string{strp("m.space")}}}, 1, "e"},
		{"ordinary rooms only (null type)", ListConfig{Filters: &Filters{RoomTypes: &[]*string{nil}}}, 4, "bdca"},
		{"not spaces", ListConfig{Filters: &Filters{NotRoomTypes: &[]*string{strp("m.space")}}}, 4, "bdca"},
		{"not_room_types wins", ListConfig{Filters: &Filters{RoomTypes: &[]*string{strp("m.space")}, NotRoomTypes: &[]*string{strp("m.space")}}}, 0, ""},
		{"filter then range", ListConfig{Ranges: [][2]int64{{1, 1}}, Filters: &Filters{IsInvite: boolp(false)}}, 4, "d"},
	} {
		t.Run(c.name, func(t *testing.T) {
			es := mk()
			Sort(es)
			count, in := Window(&c.list, es)
			if count != c.count || ids(in) != c.window {
				t.Errorf("count %d window %q, want %d %q", count, ids(in), c.count, c.window)
			}
		})
	}
}

func TestMatchTagsAndSpaces(t *testing.T) {
	e := &Entry{ID: "!a:hs", Tags: map[string]bool{"m.favourite": true}, Spaces: map[id.RoomID]bool{"!space:hs": true}}
	for _, c := range []struct {
		name string
		f    Filters
		want bool
	}{
		{"tag", Filters{Tags: []string{"m.favourite"}}, true},
		{"other tag", Filters{Tags: []string{"m.lowpriority"}}, false},
		{"not_tags", Filters{NotTags: []string{"m.favourite"}}, false},
		{"not_tags beats tags", Filters{Tags: []string{"m.favourite"}, NotTags: []string{"m.favourite"}}, false},
		{"space", Filters{Spaces: []string{"!space:hs"}}, true},
		{"other space", Filters{Spaces: []string{"!other:hs"}}, false},
	} {
		if got := Match(&c.f, e); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestDecode(t *testing.T) {
	for _, c := range []struct {
		name  string
		body  string
		code  string
		check func(*Request) error
	}{
		{name: "empty body", body: ""},
		{name: "element x form", body: `{"conn_id":"room-list","lists":{"all":{"ranges":[[0,19]],"timeline_limit":1,
			"required_state":[["m.room.encryption",""],["m.room.member","$LAZY"],["m.room.member","$ME"]],
			"filters":{"is_invite":false,"not_room_types":["m.space"]}}},
			"room_subscriptions":{"!r:hs":{"timeline_limit":20,"required_state":[["*","*"]]}},
			"extensions":{"to_device":{"enabled":true,"since":"5"},"e2ee":{"enabled":true},"receipts":{"enabled":true,"rooms":["*"],"lists":["*"]}}}`,
			check: func(r *Request) error {
				l := r.Lists["all"]
				if len(l.Ranges) != 1 || l.Ranges[0] != [2]int64{0, 19} || !l.RequiredState.Lazy || len(l.RequiredState.Include) != 2 {
					return fmt.Errorf("list %+v", l)
				}
				if l.Filters.invite() == nil || *l.Filters.invite() || len(*l.Filters.NotRoomTypes) != 1 {
					return fmt.Errorf("filters %+v", l.Filters)
				}
				if r.Extensions.ToDevice.Since != "5" || !on(r.Extensions.E2EE) || len(*r.Extensions.Receipts.Rooms) != 1 {
					return fmt.Errorf("extensions %+v", r.Extensions)
				}
				return nil
			}},
		{name: "msc form", body: `{"pos":"3","timeout":1000,"lists":{"a":{"range":[0,9],"timeline_limit":1,
			"required_state":{"include":[{}],"exclude":[{"type":"m.room.create","state_key":""}],"lazy_members":true}}}}`,
			check: func(r *Request) error {
				l := r.Lists["a"]
				if r.Pos != "3" || *r.Timeout != 1000 || len(l.Ranges) != 1 || l.Ranges[0] != [2]int64{0, 9} {
					return fmt.Errorf("request %+v", r)
				}
				if !l.RequiredState.Lazy || l.RequiredState.Include[0] != [2]string{"*", "*"} || l.RequiredState.Exclude[0] != [2]string{"m.room.create", ""} {
					return fmt.Errorf("required_state %+v", l.RequiredState)
				}
				return nil
			}},
		{name: "not json", body: `{"lists"`, code: "M_NOT_JSON"},
		{name: "array", body: `[]`, code: "M_NOT_JSON"},
		{name: "wrong type", body: `{"conn_id": 5}`, code: "M_BAD_JSON"},
		{name: "reversed range", body: `{"lists":{"a":{"ranges":[[3,1]]}}}`, code: "M_INVALID_PARAM"},
		{name: "fractional range", body: `{"lists":{"a":{"ranges":[[0.5,1]]}}}`, code: "M_INVALID_PARAM"},
		{name: "short range", body: `{"lists":{"a":{"range":[1]}}}`, code: "M_INVALID_PARAM"},
		{name: "bad required_state pair", body: `{"room_subscriptions":{"!r:hs":{"required_state":[["a","b","c"]]}}}`, code: "M_INVALID_PARAM"},
		{name: "bad required_state object", body: `{"room_subscriptions":{"!r:hs":{"required_state":{"include":5}}}}`, code: "M_INVALID_PARAM"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var r Request
			err := decode([]byte(c.body), &r)
			if c.code != "" {
				var he *httpapi.Error
				if !errors.As(err, &he) || he.Code != c.code {
					t.Fatalf("err %v, want %s", err, c.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.check != nil {
				if err := c.check(&r); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	neg := int64(-1)
	many := map[string]*ListConfig{}
	for i := 0; i <= MaxLists; i++ {
		many[fmt.Sprint(i)] = &ListConfig{}
	}
	for _, c := range []struct {
		name string
		req  Request
		ok   bool
	}{
		{"empty", Request{}, true},
		{"too many lists", Request{Lists: many}, false},
		{"negative limit", Request{Lists: map[string]*ListConfig{"a": {RoomConfig: RoomConfig{TimelineLimit: &neg}}}}, false},
		{"null list", Request{Lists: map[string]*ListConfig{"a": nil}}, false},
		{"bad room id", Request{RoomSubscriptions: map[string]*RoomConfig{"nope": {}}}, false},
		{"bad presence", Request{SetPresence: "busy"}, false},
		{"long conn_id", Request{ConnID: string(make([]byte, MaxConnIDBytes+1))}, false},
	} {
		err := c.req.Validate()
		if (err == nil) != c.ok {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

func TestConnStatePositions(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	s := &Service{T: db}
	pk := connPK(me, "DEV", "main")

	if _, err := s.load(ctx, pk, 1); !isCode(err, "M_UNKNOWN_POS") {
		t.Fatalf("unknown pos: %v", err)
	}
	st := &connState{Tok: clientsync.Token{Events: 7}, Rooms: map[id.RoomID]*roomState{"!a:hs": {M: "join", Sent: true, SentSeq: 3}}}
	first, err := s.save(ctx, pk, st)
	if err != nil {
		t.Fatal(err)
	}
	// Concurrent requests on one position each get their own, and none
	// overwrites another.
	const n = 8
	var wg sync.WaitGroup
	got := make([]int64, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			loaded, err := s.load(ctx, pk, first)
			if err != nil {
				errs[i] = err
				return
			}
			loaded.Prev = first
			loaded.Tok.Events = int64(100 + i)
			got[i], errs[i] = s.save(ctx, pk, loaded)
		}(i)
	}
	wg.Wait()
	seen := map[int64]bool{first: true}
	for i := 0; i < n; i++ {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if seen[got[i]] {
			t.Fatalf("position %d handed out twice", got[i])
		}
		seen[got[i]] = true
		back, err := s.load(ctx, pk, got[i])
		if err != nil || back.Tok.Events != int64(100+i) || back.Rooms["!a:hs"].SentSeq != 3 {
			t.Fatalf("position %d: %+v %v", got[i], back, err)
		}
	}
	// Using a later position forgets the earlier one.
	s.forget(ctx, pk, first)
	if _, err := s.load(ctx, pk, first); !isCode(err, "M_UNKNOWN_POS") {
		t.Fatalf("forgotten pos: %v", err)
	}
	// Another device's or connection's positions are not this one's.
	if _, err := s.load(ctx, connPK(me, "OTHER", "main"), got[0]); !isCode(err, "M_UNKNOWN_POS") {
		t.Fatalf("other device: %v", err)
	}
	// A large state is stored compressed and reads back whole.
	big := &connState{Rooms: map[id.RoomID]*roomState{}}
	for i := 0; i < 3000; i++ {
		big.Rooms[id.RoomID(fmt.Sprintf("!room%06d:example.org", i))] = &roomState{M: "join", Facts: true, Last: int64(i), Bump: int64(i), Sent: true, Cfg: "abcdef012345.20"}
	}
	p, err := s.save(ctx, pk, big)
	if err != nil {
		t.Fatal(err)
	}
	back, err := s.load(ctx, pk, p)
	if err != nil || len(back.Rooms) != 3000 || back.Rooms["!room002999:example.org"].Bump != 2999 {
		t.Fatalf("big state: %v", err)
	}
	for _, bad := range []string{"", "0", "01", "-1", "x", "99999999999999999999"} {
		if _, ok := parsePos(bad); ok {
			t.Errorf("parsePos(%q) accepted", bad)
		}
	}
}

func isCode(err error, code string) bool {
	var he *httpapi.Error
	return errors.As(err, &he) && he.Code == code && he.Status == 400
}

func TestExtRooms(t *testing.T) {
	p := &plan{relevant: map[id.RoomID][]string{"!a:hs": {"all"}, "!b:hs": {"dms"}, "!s:hs": nil},
		subs: map[id.RoomID]bool{"!s:hs": true}}
	sl := func(s ...string) *[]string { return &s }
	for _, c := range []struct {
		name string
		cfg  ExtConfig
		want string
	}{
		{"defaults: every list and subscription", ExtConfig{}, "!a:hs !b:hs !s:hs"},
		{"rooms * and lists default", ExtConfig{Rooms: sl("*")}, "!a:hs !b:hs !s:hs"},
		{"one list, no rooms", ExtConfig{Lists: sl("dms"), Rooms: sl()}, "!b:hs"},
		{"no lists, one room", ExtConfig{Lists: sl(), Rooms: sl("!s:hs")}, "!s:hs"},
		{"unsubscribed room ignored", ExtConfig{Lists: sl(), Rooms: sl("!a:hs")}, ""},
	} {
		got := extRooms(&c.cfg, p)
		var ids []string
		for _, r := range []id.RoomID{"!a:hs", "!b:hs", "!s:hs"} {
			if got[r] {
				ids = append(ids, string(r))
			}
		}
		if s := fmt.Sprint(ids); s != fmt.Sprint(strings.Fields(c.want)) {
			t.Errorf("%s: %v, want %s", c.name, ids, c.want)
		}
	}
}

func TestPlanWhatToSend(t *testing.T) {
	lim := func(n int64) *int64 { return &n }
	names := RequiredState{Include: [][2]string{{"m.room.name", ""}}}
	list := func(end int64, limit int64, rs RequiredState) *Request {
		return &Request{Lists: map[string]*ListConfig{"all": {RoomConfig: RoomConfig{TimelineLimit: lim(limit), RequiredState: rs}, Ranges: [][2]int64{{0, end}}}}}
	}
	cfg := func(limit int, rs RequiredState) string { return NewStateSpec(me, rs).Hash(limit) }
	sent := func(m string, last, sentPos int64, c string) *roomState {
		return &roomState{M: m, Facts: true, Last: last, Bump: last, Sent: true, SentM: m, SentPos: sentPos, SentSeq: 5, Cfg: c}
	}
	for _, c := range []struct {
		name         string
		req          *Request
		room         *roomState
		lists        map[string]int
		send         bool
		initial      bool
		expanded     bool
		count        int
		listsChanged bool
	}{
		{name: "never sent", req: list(9, 1, names), room: &roomState{M: "join", Facts: true, Bump: 3}, send: true, initial: true, count: 1, listsChanged: true},
		{name: "sent, unchanged", req: list(9, 1, names), room: sent("join", 10, 10, cfg(1, names)), lists: map[string]int{"all": 1}, count: 1},
		{name: "new event", req: list(9, 1, names), room: sent("join", 12, 10, cfg(1, names)), lists: map[string]int{"all": 1}, send: true, count: 1},
		{name: "unread counts changed", req: list(9, 1, names), room: func() *roomState { r := sent("join", 10, 10, cfg(1, names)); r.Unread = true; return r }(), lists: map[string]int{"all": 1}, send: true, count: 1},
		{name: "required_state changed", req: list(9, 1, RequiredState{Include: [][2]string{{"*", "*"}}}), room: sent("join", 10, 10, cfg(1, names)), lists: map[string]int{"all": 1}, send: true, initial: true, count: 1},
		{name: "timeline limit raised", req: list(9, 10, names), room: sent("join", 10, 10, cfg(1, names)), lists: map[string]int{"all": 1}, send: true, expanded: true, count: 1},
		{name: "timeline limit lowered", req: list(9, 1, names), room: sent("join", 10, 10, cfg(10, names)), lists: map[string]int{"all": 1}, count: 1},
		{name: "invite became join", req: list(9, 1, names), room: func() *roomState { r := sent("join", 10, 10, cfg(1, names)); r.SentM = "invite"; return r }(), lists: map[string]int{"all": 1}, send: true, initial: true, count: 1},
		{name: "left after being sent", req: list(9, 1, names), room: func() *roomState { r := sent("leave", 10, 10, cfg(1, names)); r.SentM = "join"; return r }(), lists: map[string]int{"all": 1}, send: true, count: 1},
		{name: "left and shown left", req: list(9, 1, names), room: sent("leave", 10, 10, cfg(1, names)), lists: map[string]int{"all": 1}, count: 0, listsChanged: true},
		{name: "kicked, never sent", req: list(9, 1, names), room: &roomState{M: "leave", Facts: true, Bump: 3, Kicked: true}, send: true, initial: true, count: 1, listsChanged: true},
		{name: "kicked, shown kicked", req: list(9, 1, names), room: func() *roomState { r := sent("ban", 10, 10, cfg(1, names)); r.Kicked = true; return r }(), lists: map[string]int{"all": 1}, count: 1},
		{name: "left, never sent", req: list(9, 1, names), room: &roomState{M: "leave", Facts: true, Bump: 3}, count: 0, listsChanged: true},
		{name: "outside the range", req: list(0, 1, names), room: &roomState{M: "join", Facts: true, Bump: 1}, count: 2, listsChanged: true},
		{name: "subscribed outside the range", req: func() *Request {
			r := list(0, 1, names)
			r.RoomSubscriptions = map[string]*RoomConfig{"!r:hs": {TimelineLimit: lim(5)}}
			return r
		}(), room: &roomState{M: "join", Facts: true, Bump: 1}, send: true, initial: true, count: 2, listsChanged: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := &connState{Rooms: map[id.RoomID]*roomState{"!r:hs": c.room}, Lists: c.lists}
			if c.name == "outside the range" || c.name == "subscribed outside the range" {
				st.Rooms["!top:hs"] = sent("join", 50, 50, cfg(1, names)) // the newest room fills [0,0]
			}
			r := &run{s: &Service{}, c: &Call{Req: c.req}, me: me, st: st}
			p, err := r.plan(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			var sr *sendRoom
			for _, x := range p.send {
				if x.id == "!r:hs" {
					sr = x
				}
			}
			if (sr != nil) != c.send {
				t.Fatalf("sent = %v, want %v", sr != nil, c.send)
			}
			if sr != nil && (sr.initial != c.initial || sr.expanded != c.expanded) {
				t.Errorf("initial %v expanded %v, want %v %v", sr.initial, sr.expanded, c.initial, c.expanded)
			}
			if p.lists["all"].Count != c.count || p.listsChanged != c.listsChanged {
				t.Errorf("count %d changed %v, want %d %v", p.lists["all"].Count, p.listsChanged, c.count, c.listsChanged)
			}
		})
	}
}
