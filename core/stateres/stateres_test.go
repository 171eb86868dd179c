package stateres_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/stateres"
)

// room builds events by hand, so tests can make forks no single server
// would produce.
type room struct {
	t      *testing.T
	rv     id.RoomVersion
	id     id.RoomID
	events map[id.EventID]*pdu.PDU
	ts     int64
}

func newRoom(t *testing.T, rv id.RoomVersion, creator id.UserID) (*room, id.EventID) {
	r := &room{t: t, rv: rv, events: map[id.EventID]*pdu.PDU{}}
	c := map[string]any{"room_version": string(rv)}
	if rv.CreatorInContent() {
		c["creator"] = creator
	}
	if !rv.RoomIDIsCreateEventID() {
		r.id = "!room:example.org"
	}
	create := r.add("m.room.create", "", creator, c, nil, nil)
	if rv.RoomIDIsCreateEventID() {
		r.id = id.RoomID("!" + string(create)[1:])
	}
	return r, create
}

// add builds one state event with the given auth and prev events.
func (r *room) add(typ, skey string, sender id.UserID, content any, auth, prev []id.EventID) id.EventID {
	r.t.Helper()
	r.ts++
	cb, _ := json.Marshal(content)
	k := skey
	p := &pdu.PDU{Type: typ, StateKey: &k, Sender: sender, Content: cb, OriginServerTS: r.ts,
		AuthEvents: auth, PrevEvents: prev, Depth: int64(len(r.events) + 1)}
	if p.AuthEvents == nil {
		p.AuthEvents = []id.EventID{}
	}
	if p.PrevEvents == nil {
		p.PrevEvents = []id.EventID{}
	}
	if !(typ == "m.room.create" && r.rv.RoomIDIsCreateEventID()) {
		p.RoomID = r.id
	}
	if err := p.FillContentHash(); err != nil {
		r.t.Fatal(err)
	}
	var eid id.EventID
	if r.rv.EventIDFormat() == id.EventIDFormatCustom {
		eid = id.EventID(fmt.Sprintf("$e%d:example.org", len(r.events)+1)) // v1/v2: chosen by the server
	} else {
		var err error
		if eid, err = p.GetEventID(r.rv); err != nil {
			r.t.Fatal(err)
		}
	}
	p.InternalMeta.EventID = eid
	r.events[eid] = p
	return eid
}

func (r *room) fetch(_ context.Context, ids []id.EventID) ([]*pdu.PDU, error) {
	var out []*pdu.PDU
	for _, e := range ids {
		if p, ok := r.events[e]; ok {
			out = append(out, p)
		}
	}
	return out, nil
}

// auth lists the create event (before v12) and the others.
func (r *room) auth(create id.EventID, others ...id.EventID) []id.EventID {
	if r.rv.RoomIDIsCreateEventID() {
		return others
	}
	return append([]id.EventID{create}, others...)
}

func key(typ, skey string) pdu.StateKey { return pdu.StateKey{Type: typ, StateKey: skey} }

const (
	alice   = id.UserID("@alice:example.org")
	bob     = id.UserID("@bob:example.org")
	charlie = id.UserID("@charlie:example.org")
	dave    = id.UserID("@dave:example.org")
)

// base makes a room where Alice created it, Bob is a moderator (50),
// Charlie and (for public rooms) anyone may join.
type baseRoom struct {
	*room
	create, aliceJoin, pl, joinRules, bobJoin, charlieJoin id.EventID
	state                                                  stateres.StateMap
}

func newBase(t *testing.T, rv id.RoomVersion) *baseRoom {
	r, create := newRoom(t, rv, alice)
	b := &baseRoom{room: r, create: create}
	b.aliceJoin = r.add("m.room.member", string(alice), alice, map[string]string{"membership": "join"}, r.auth(create), []id.EventID{create})
	users := map[string]int{string(bob): 50}
	if !rv.PrivilegedRoomCreators() {
		users[string(alice)] = 100
	}
	b.pl = r.add("m.room.power_levels", "", alice, map[string]any{"users": users, "ban": 50, "kick": 50, "state_default": 50, "events_default": 0, "users_default": 0},
		r.auth(create, b.aliceJoin), []id.EventID{b.aliceJoin})
	b.joinRules = r.add("m.room.join_rules", "", alice, map[string]string{"join_rule": "public"}, r.auth(create, b.aliceJoin, b.pl), []id.EventID{b.pl})
	b.bobJoin = r.add("m.room.member", string(bob), bob, map[string]string{"membership": "join"}, r.auth(create, b.pl, b.joinRules), []id.EventID{b.joinRules})
	b.charlieJoin = r.add("m.room.member", string(charlie), charlie, map[string]string{"membership": "join"}, r.auth(create, b.pl, b.joinRules), []id.EventID{b.bobJoin})
	b.state = stateres.StateMap{
		key("m.room.create", ""): create, key("m.room.member", string(alice)): b.aliceJoin,
		key("m.room.power_levels", ""): b.pl, key("m.room.join_rules", ""): b.joinRules,
		key("m.room.member", string(bob)): b.bobJoin, key("m.room.member", string(charlie)): b.charlieJoin,
	}
	return b
}

func with(base stateres.StateMap, k pdu.StateKey, v id.EventID) stateres.StateMap {
	out := stateres.StateMap{}
	for kk, vv := range base {
		out[kk] = vv
	}
	out[k] = v
	return out
}

var versions = []id.RoomVersion{"6", "10", "11", "12"}

// resolveBothWays resolves the sets in both orders (and shuffled) and
// requires the same answer: servers that see the fork differently agree.
func resolveBothWays(t *testing.T, r *room, sets ...stateres.StateMap) stateres.StateMap {
	t.Helper()
	first, err := stateres.Resolve(context.Background(), r.rv, sets, r.fetch)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		shuffled := append([]stateres.StateMap(nil), sets...)
		rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		again, err := stateres.Resolve(context.Background(), r.rv, shuffled, r.fetch)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(again) != fmt.Sprint(first) {
			t.Fatalf("resolution depends on the order of the state sets:\n%v\n%v", first, again)
		}
	}
	return first
}

// TestBanRace: Alice demotes Bob while Bob bans Charlie. The demotion comes
// first in power order, so Bob's ban no longer passes and Charlie stays.
func TestBanRace(t *testing.T) {
	for _, rv := range versions {
		t.Run("v"+string(rv), func(t *testing.T) {
			b := newBase(t, rv)
			users := map[string]int{string(bob): 0}
			if !rv.PrivilegedRoomCreators() {
				users[string(alice)] = 100
			}
			demote := b.add("m.room.power_levels", "", alice, map[string]any{"users": users, "ban": 50, "kick": 50, "state_default": 50},
				b.auth(b.create, b.aliceJoin, b.pl), []id.EventID{b.charlieJoin})
			ban := b.add("m.room.member", string(charlie), bob, map[string]string{"membership": "ban"},
				b.auth(b.create, b.pl, b.bobJoin, b.charlieJoin), []id.EventID{b.charlieJoin})
			got := resolveBothWays(t, b.room,
				with(b.state, key("m.room.power_levels", ""), demote),
				with(b.state, key("m.room.member", string(charlie)), ban))
			if got[key("m.room.power_levels", "")] != demote {
				t.Fatalf("power levels: got %s, want the demotion", got[key("m.room.power_levels", "")])
			}
			if got[key("m.room.member", string(charlie))] != b.charlieJoin {
				t.Fatalf("charlie: got %s, want still joined (the ban lost)", got[key("m.room.member", string(charlie))])
			}
		})
	}
}

// TestJoinRuleRace: Alice makes the room invite-only while Dave joins under
// the old public rule; the join-rule change wins and Dave's join fails.
func TestJoinRuleRace(t *testing.T) {
	for _, rv := range versions {
		t.Run("v"+string(rv), func(t *testing.T) {
			b := newBase(t, rv)
			private := b.add("m.room.join_rules", "", alice, map[string]string{"join_rule": "invite"},
				b.auth(b.create, b.aliceJoin, b.pl), []id.EventID{b.charlieJoin})
			daveJoin := b.add("m.room.member", string(dave), dave, map[string]string{"membership": "join"},
				b.auth(b.create, b.pl, b.joinRules), []id.EventID{b.charlieJoin})
			got := resolveBothWays(t, b.room,
				with(b.state, key("m.room.join_rules", ""), private),
				with(b.state, key("m.room.member", string(dave)), daveJoin))
			if got[key("m.room.join_rules", "")] != private {
				t.Fatalf("join rules not invite")
			}
			if _, joined := got[key("m.room.member", string(dave))]; joined {
				t.Fatalf("dave's join survived an invite-only rule")
			}
		})
	}
}

// TestTopicRace: two allowed topic changes with the same power: mainline
// ties break by timestamp, so the later one wins on every server.
func TestTopicRace(t *testing.T) {
	for _, rv := range versions {
		t.Run("v"+string(rv), func(t *testing.T) {
			b := newBase(t, rv)
			t1 := b.add("m.room.topic", "", alice, map[string]string{"topic": "one"}, b.auth(b.create, b.aliceJoin, b.pl), []id.EventID{b.charlieJoin})
			t2 := b.add("m.room.topic", "", bob, map[string]string{"topic": "two"}, b.auth(b.create, b.bobJoin, b.pl), []id.EventID{b.charlieJoin})
			got := resolveBothWays(t, b.room, with(b.state, key("m.room.topic", ""), t1), with(b.state, key("m.room.topic", ""), t2))
			if got[key("m.room.topic", "")] != t2 {
				t.Fatalf("topic: got %s, want the later %s", got[key("m.room.topic", "")], t2)
			}
		})
	}
}

// TestUnauthorizedStateIgnored: an event in a state set that fails auth
// (Charlie, power 0, renames the room) does not survive resolution.
func TestUnauthorizedStateIgnored(t *testing.T) {
	for _, rv := range versions {
		t.Run("v"+string(rv), func(t *testing.T) {
			b := newBase(t, rv)
			bad := b.add("m.room.name", "", charlie, map[string]string{"name": "pwned"}, b.auth(b.create, b.charlieJoin, b.pl), []id.EventID{b.charlieJoin})
			good := b.add("m.room.name", "", alice, map[string]string{"name": "fine"}, b.auth(b.create, b.aliceJoin, b.pl), []id.EventID{b.charlieJoin})
			got := resolveBothWays(t, b.room, with(b.state, key("m.room.name", ""), bad), with(b.state, key("m.room.name", ""), good))
			if got[key("m.room.name", "")] != good {
				t.Fatalf("name: got %s, want %s", got[key("m.room.name", "")], good)
			}
		})
	}
}

func TestTrivialCases(t *testing.T) {
	b := newBase(t, "12")
	got, err := stateres.Resolve(context.Background(), "12", []stateres.StateMap{b.state, b.state}, b.fetch)
	if err != nil || fmt.Sprint(got) != fmt.Sprint(b.state) {
		t.Fatalf("identical sets: %v %v", got, err)
	}
	if _, err := stateres.Resolve(context.Background(), "99", nil, b.fetch); err == nil {
		t.Fatal("unknown room version accepted")
	}
}
