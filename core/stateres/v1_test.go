package stateres_test

import (
	"testing"

	"maunium.net/go/mautrix/id"
)

// State resolution v1 (room version 1): the same races as v2, plus the
// rules that set v1 apart.
func TestV1(t *testing.T) {
	t.Run("ban race: the demotion wins, the ban fails", func(t *testing.T) {
		b := newBase(t, "1")
		demote := b.add("m.room.power_levels", "", alice, map[string]any{"users": map[string]int{string(alice): 100, string(bob): 0}, "ban": 50, "kick": 50, "state_default": 50},
			b.auth(b.create, b.aliceJoin, b.pl), []id.EventID{b.charlieJoin})
		ban := b.add("m.room.member", string(charlie), bob, map[string]string{"membership": "ban"},
			b.auth(b.create, b.pl, b.bobJoin, b.charlieJoin), []id.EventID{b.charlieJoin})
		got := resolveBothWays(t, b.room,
			with(b.state, key("m.room.power_levels", ""), demote),
			with(b.state, key("m.room.member", string(charlie)), ban))
		if got[key("m.room.power_levels", "")] != demote {
			t.Fatalf("power levels: got %s, want the demotion", got[key("m.room.power_levels", "")])
		}
		// The member key conflicts (join vs ban): walked oldest first, the
		// ban is not allowed once Bob is demoted.
		if got[key("m.room.member", string(charlie))] != b.charlieJoin {
			t.Fatalf("charlie: got %s, want still joined", got[key("m.room.member", string(charlie))])
		}
	})
	t.Run("an unauthorized newer power levels event loses", func(t *testing.T) {
		b := newBase(t, "1")
		grab := b.add("m.room.power_levels", "", bob, map[string]any{"users": map[string]int{string(alice): 100, string(bob): 100}, "state_default": 50},
			b.auth(b.create, b.bobJoin, b.pl), []id.EventID{b.charlieJoin})
		got := resolveBothWays(t, b.room, b.state, with(b.state, key("m.room.power_levels", ""), grab))
		if got[key("m.room.power_levels", "")] != b.pl {
			t.Fatalf("power levels: got %s, want the original %s", got[key("m.room.power_levels", "")], b.pl)
		}
	})
	t.Run("other keys: the deepest event that passes auth", func(t *testing.T) {
		b := newBase(t, "1")
		good := b.add("m.room.name", "", alice, map[string]string{"name": "fine"}, b.auth(b.create, b.aliceJoin, b.pl), []id.EventID{b.charlieJoin})
		later := b.add("m.room.name", "", bob, map[string]string{"name": "later"}, b.auth(b.create, b.bobJoin, b.pl), []id.EventID{b.charlieJoin})
		bad := b.add("m.room.name", "", charlie, map[string]string{"name": "pwned"}, b.auth(b.create, b.charlieJoin, b.pl), []id.EventID{b.charlieJoin})
		got := resolveBothWays(t, b.room,
			with(b.state, key("m.room.name", ""), good),
			with(b.state, key("m.room.name", ""), later),
			with(b.state, key("m.room.name", ""), bad))
		if got[key("m.room.name", "")] != later {
			t.Fatalf("name: got %s, want the deepest allowed %s", got[key("m.room.name", "")], later)
		}
	})
	t.Run("a key in only some sets is not a conflict", func(t *testing.T) {
		b := newBase(t, "1")
		private := b.add("m.room.join_rules", "", alice, map[string]string{"join_rule": "invite"},
			b.auth(b.create, b.aliceJoin, b.pl), []id.EventID{b.charlieJoin})
		daveJoin := b.add("m.room.member", string(dave), dave, map[string]string{"membership": "join"},
			b.auth(b.create, b.pl, b.joinRules), []id.EventID{b.charlieJoin})
		got := resolveBothWays(t, b.room,
			with(b.state, key("m.room.join_rules", ""), private),
			with(b.state, key("m.room.member", string(dave)), daveJoin))
		if got[key("m.room.join_rules", "")] != private {
			t.Fatalf("join rules: got %s", got[key("m.room.join_rules", "")])
		}
		// v1 keeps the unconflicted join (v2 re-checks it and drops it).
		if got[key("m.room.member", string(dave))] != daveJoin {
			t.Fatalf("dave: got %q, want the unconflicted join", got[key("m.room.member", string(dave))])
		}
	})
}
