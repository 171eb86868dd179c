package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/accounts"
	"github.com/cirrus-matrix/cirrus/core/migrate"
	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

// ghostRegistration is an application service with an exclusive user
// namespace and no URL (nothing is delivered to it).
const ghostRegistration = `id: ghosts
url: null
as_token: as-token-ghosts-0123456789
hs_token: hs-token-ghosts-0123456789
sender_localpart: ghostbot
namespaces:
  users:
    - exclusive: true
      regex: "@_ghost_.*:cirrus\\.test"
`

// directoryHits runs a user directory search and returns "user=display
// name" for each result, in order.
func directoryHits(t *testing.T, env *testenv.Env, c *mautrix.Client, term string) []string {
	t.Helper()
	st, body := doJSON(t, env, "POST", "/_matrix/client/v3/user_directory/search", c.AccessToken, map[string]any{"search_term": term})
	if st != 200 {
		t.Fatalf("search %q: %d %v", term, st, body)
	}
	out := []string{}
	for _, r := range body["results"].([]any) {
		m := r.(map[string]any)
		name, _ := m["display_name"].(string)
		out = append(out, fmt.Sprintf("%s=%s", m["user_id"], name))
	}
	return out
}

// eventuallyHits waits for a search to give want (the directory index is
// eventually consistent on DynamoDB).
func eventuallyHits(t *testing.T, env *testenv.Env, c *mautrix.Client, term string, want ...string) {
	t.Helper()
	var got []string
	eventually(t, fmt.Sprintf("search %q to find %q", term, want), func() bool {
		got = directoryHits(t, env, c, term)
		return slices.Equal(got, want) || (len(got) == 0 && len(want) == 0)
	})
}

func TestUserDirectorySearchAllUsers(t *testing.T) {
	vars := map[string]string{
		"CIRRUS_USER_DIRECTORY_SEARCH_ALL_USERS": "true",
		"CIRRUS_APPSERVICE_YAML":                 ghostRegistration,
	}
	forEachEngineWith(t, vars, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		carol := register(t, env, "carol", "pw")
		dave := register(t, env, "dave", "pw")
		if err := bob.SetDisplayName(ctx, "Zoë Müller"); err != nil {
			t.Fatal(err)
		}
		// Bob shares no room with alice and is in no public room: only the
		// all-users mode finds him, by name, case- and accent-insensitively.
		for _, term := range []string{"zoe", "MÜLL", "Zoë Müller", "bo", "@bob:cirrus.test"} {
			eventuallyHits(t, env, alice, term, "@bob:cirrus.test=Zoë Müller")
		}
		eventuallyHits(t, env, alice, "oe") // inside a word
		eventuallyHits(t, env, alice, "alice")

		// A profile change shows in the next search.
		if err := bob.SetDisplayName(ctx, "Robert Tables"); err != nil {
			t.Fatal(err)
		}
		eventuallyHits(t, env, alice, "zoe")
		eventuallyHits(t, env, alice, "rob tab", "@bob:cirrus.test=Robert Tables")

		// Users sharing a room with the searcher come first, then by name,
		// and each user once (carol is found both through the room and the
		// index).
		if err := carol.SetDisplayName(ctx, "Sam Zed"); err != nil {
			t.Fatal(err)
		}
		if err := dave.SetDisplayName(ctx, "Sam Aaron"); err != nil {
			t.Fatal(err)
		}
		eventuallyHits(t, env, alice, "sam", "@dave:cirrus.test=Sam Aaron", "@carol:cirrus.test=Sam Zed")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{carol.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := carol.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		eventuallyHits(t, env, alice, "sam", "@carol:cirrus.test=Sam Zed", "@dave:cirrus.test=Sam Aaron")

		// Deactivated users disappear.
		const deact = "/_matrix/client/v3/account/deactivate"
		session := uiaSession(t, env, "POST", deact, dave.AccessToken, `{}`)
		if st, body := doJSON(t, env, "POST", deact, dave.AccessToken, map[string]any{"auth": passwordAuth(session, "dave", "pw")}); st != 200 {
			t.Fatalf("deactivate: %d %v", st, body)
		}
		eventuallyHits(t, env, alice, "sam", "@carol:cirrus.test=Sam Zed")
		eventuallyHits(t, env, alice, "aaron")

		// The application service's ghosts and sender stay out, as in Synapse.
		st, body := doJSON(t, env, "POST", "/_matrix/client/v3/register?access_token=as-token-ghosts-0123456789", "",
			map[string]any{"type": "m.login.application_service", "username": "_ghost_sam"})
		if st != 200 {
			t.Fatalf("ghost registration: %d %v", st, body)
		}
		eventuallyHits(t, env, alice, "ghost")
		eventuallyHits(t, env, alice, "sam", "@carol:cirrus.test=Sam Zed")
	})
}

func TestUserDirectoryRoomsOnlyByDefault(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		if err := bob.SetDisplayName(ctx, "Zoë Müller"); err != nil {
			t.Fatal(err)
		}
		for _, term := range []string{"zoe", "bob", ""} {
			if got := directoryHits(t, env, alice, term); len(got) != 0 {
				t.Fatalf("search %q without the all-users mode found %q", term, got)
			}
		}
		// Sharing a room makes bob findable, and his name change shows.
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		eventuallyHits(t, env, alice, "zoe", "@bob:cirrus.test=Zoë Müller")
		if err := bob.SetDisplayName(ctx, "Robert Tables"); err != nil {
			t.Fatal(err)
		}
		eventuallyHits(t, env, alice, "zoe")
		eventuallyHits(t, env, alice, "robert", "@bob:cirrus.test=Robert Tables")
	})
}

// TestUserDirectoryMigrationBackfill turns a running server's store back
// into format 2 (accounts without directory entries) and runs the start-up
// migration on it, as a process of this release starting on an old store
// does: every account is findable again, deactivated ones are not.
func TestUserDirectoryMigrationBackfill(t *testing.T) {
	forEachEngineWith(t, map[string]string{"CIRRUS_USER_DIRECTORY_SEARCH_ALL_USERS": "true"}, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		gone := register(t, env, "gone", "pw")
		if err := bob.SetDisplayName(ctx, "Élodie Ancienne"); err != nil {
			t.Fatal(err)
		}
		if err := gone.SetDisplayName(ctx, "Élodie Gone"); err != nil {
			t.Fatal(err)
		}
		const deact = "/_matrix/client/v3/account/deactivate"
		session := uiaSession(t, env, "POST", deact, gone.AccessToken, `{}`)
		if st, body := doJSON(t, env, "POST", deact, gone.AccessToken, map[string]any{"auth": passwordAuth(session, "gone", "pw")}); st != 200 {
			t.Fatalf("deactivate: %d %v", st, body)
		}
		eventuallyHits(t, env, alice, "elodie", "@bob:cirrus.test=Élodie Ancienne")

		// Back to format 2: no directory entries at all.
		tb := env.Apps[0].Table
		q := table.Query{Index: table.IndexName, PK: accounts.DirectoryIndex}
		for {
			page, err := tb.Query(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			for _, it := range page.Items {
				if err := tb.Delete(ctx, it.Key(), table.Cond{}); err != nil {
					t.Fatal(err)
				}
			}
			if page.Next == "" {
				break
			}
			q.Cursor = page.Next
		}
		cur, err := migrate.Version(ctx, tb)
		if err != nil || cur < 3 {
			t.Fatalf("format %d %v", cur, err)
		}
		if err := tb.Put(ctx, table.Item{PK: "meta", SK: "format", Version: 2, Data: []byte("old")}, table.IfVersion(cur)); err != nil {
			t.Fatal(err)
		}
		eventuallyHits(t, env, alice, "elodie")

		if err := migrate.Up(ctx, tb, migrate.Steps); err != nil {
			t.Fatal(err)
		}
		eventuallyHits(t, env, alice, "elodie", "@bob:cirrus.test=Élodie Ancienne")
		eventuallyHits(t, env, bob, "alice", "@alice:cirrus.test=alice")
		eventuallyHits(t, env, alice, "gone")
	})
}
