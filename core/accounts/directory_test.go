package accounts

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/internal/testtable"
)

// dirService is a Service on a fresh table of engine.
func dirService(t *testing.T, engine string) *Service {
	t.Helper()
	return &Service{T: testtable.Open(t, engine), ServerName: "test.local", BcryptCost: 4}
}

// dirSearch returns the sorted user IDs (with display names) term finds.
// The index is eventually consistent on DynamoDB, so a search that does
// not give want yet is retried for a while.
func dirSearch(t *testing.T, s *Service, term string, want []string) {
	t.Helper()
	var got []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		found, more, err := s.SearchDirectory(context.Background(), FoldWords(term), 1000)
		if err != nil || more {
			t.Fatalf("search %q: more=%v %v", term, more, err)
		}
		got = got[:0]
		for _, e := range found {
			got = append(got, fmt.Sprintf("%s=%s", e.UserID.Localpart(), e.DisplayName))
		}
		slices.Sort(got)
		if slices.Equal(got, want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("search %q found %q, want %q", term, got, want)
	}
}

func setName(t *testing.T, s *Service, u id.UserID, name string) {
	t.Helper()
	_, err := s.UpdateProfile(context.Background(), u, func(p Profile) error {
		if name == "" {
			delete(p, FieldDisplayName)
		} else {
			p[FieldDisplayName] = mustJSON(name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// entries lists the directory items of u in the table itself.
func entries(t *testing.T, s *Service, u id.UserID) []string {
	t.Helper()
	q := table.Query{PK: userPK(u), Prefix: dirMarkerSK}
	var out []string
	for {
		page, err := s.T.Query(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range page.Items {
			out = append(out, it.SK)
		}
		if page.Next == "" {
			return out
		}
		q.Cursor = page.Next
	}
}

func TestDirectoryIndexFollowsAccountsAndProfiles(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			ctx := context.Background()
			s := dirService(t, engine)
			alice := register(t, s, "alice").UserID
			bob := register(t, s, "bob_smith").UserID
			register(t, s, "carol")
			setName(t, s, bob, "Zoë Müller")

			cases := []struct {
				term string
				want []string
			}{
				{"zoe", []string{"bob_smith=Zoë Müller"}},
				{"MÜLL zo", []string{"bob_smith=Zoë Müller"}},
				{"smi", []string{"bob_smith=Zoë Müller"}},
				{"@bob_smith:test.local", []string{"bob_smith=Zoë Müller"}},
				{"al", []string{"alice=alice"}},
				{"oe", nil},        // inside a word
				{"zoe carol", nil}, // every term must match
				// Terms every local user matches (server name words, none)
				// list everyone through the one entry per user.
				{"test", []string{"alice=alice", "bob_smith=Zoë Müller", "carol=carol"}},
				{"", []string{"alice=alice", "bob_smith=Zoë Müller", "carol=carol"}},
				{"test car", []string{"carol=carol"}},
			}
			for _, tc := range cases {
				dirSearch(t, s, tc.term, tc.want)
			}

			// A new name replaces the old words; the avatar is carried.
			setName(t, s, bob, "Robert Tables")
			if _, err := s.UpdateProfile(ctx, bob, func(p Profile) error {
				p[FieldAvatarURL] = mustJSON("mxc://test.local/abc")
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			dirSearch(t, s, "zoe", nil)
			dirSearch(t, s, "rob tab", []string{"bob_smith=Robert Tables"})
			found, _, err := s.SearchDirectory(ctx, FoldWords("robert"), 10)
			if err != nil || len(found) != 1 || found[0].AvatarURL != "mxc://test.local/abc" {
				t.Fatalf("avatar: %+v %v", found, err)
			}
			if got, want := entries(t, s, bob), []string{"udir", "udir#bob", "udir#robert", "udir#smith", "udir#tables"}; !reflect.DeepEqual(got, want) {
				t.Fatalf("bob's entries %q, want %q", got, want)
			}

			// Erasing the profile keeps the user listed under the localpart.
			if err := s.DeleteProfile(ctx, bob); err != nil {
				t.Fatal(err)
			}
			dirSearch(t, s, "robert", nil)
			dirSearch(t, s, "bob", []string{"bob_smith="})

			// Locked users are not listed while locked.
			if err := s.SetLocked(ctx, alice, true); err != nil {
				t.Fatal(err)
			}
			dirSearch(t, s, "alice", nil)
			if err := s.SetLocked(ctx, alice, false); err != nil {
				t.Fatal(err)
			}
			dirSearch(t, s, "alice", []string{"alice=alice"})

			// Deactivated users disappear, entries and all.
			if err := s.Deactivate(ctx, alice); err != nil {
				t.Fatal(err)
			}
			dirSearch(t, s, "alice", nil)
			dirSearch(t, s, "", []string{"bob_smith=", "carol=carol"})
			if got := entries(t, s, alice); len(got) != 0 {
				t.Fatalf("a deactivated user keeps entries %q", got)
			}
			// A profile change after deactivation does not list them again.
			setName(t, s, alice, "Alice Again")
			dirSearch(t, s, "again", nil)
		})
	}
}

func TestDirectoryWords(t *testing.T) {
	long := strings.Repeat("é", 40) // 80 bytes
	many := make([]string, 30)
	for i := range many {
		many[i] = fmt.Sprintf("w%02d", i)
	}
	cases := []struct {
		name    string
		user    id.UserID
		display string
		want    []string
	}{
		{"localpart then name, distinct", "@ann_lee:test.local", "Ann Lee-Ng", []string{"ann", "lee", "ng"}},
		{"no localpart words", "@___:test.local", "Ünder", []string{"under"}},
		{"capped", "@x:test.local", strings.Join(many, " "), append([]string{"x"}, many[:MaxDirectoryWords-1]...)},
		{"long word cut on a rune boundary", "@y:test.local", long, []string{"y", strings.Repeat("e", 40)}},
		{"long multibyte word", "@z:test.local", strings.Repeat("李", 30), []string{"z", strings.Repeat("李", 21)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := directoryWords(tc.user, tc.display); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("directoryWords = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDirectoryLongWordsAndLimits(t *testing.T) {
	s := dirService(t, "bolt")
	ctx := context.Background()
	long := strings.Repeat("abcdefghij", 10) // 100 bytes: indexed as its first 64
	for i := range 5 {
		u := register(t, s, fmt.Sprintf("user%d", i)).UserID
		setName(t, s, u, fmt.Sprintf("%s %d", long, i))
	}
	// A term longer than the indexed part still finds, and still filters
	// on the whole word.
	dirSearch(t, s, long[:80], []string{"user0=" + long + " 0", "user1=" + long + " 1", "user2=" + long + " 2", "user3=" + long + " 3", "user4=" + long + " 4"})
	dirSearch(t, s, long[:70]+"x", nil)
	// Reading stops at maxEntries and says so.
	found, more, err := s.SearchDirectory(ctx, FoldWords("abc"), 3)
	if err != nil || !more || len(found) != 3 {
		t.Fatalf("capped search: %d found, more=%v, %v", len(found), more, err)
	}
}

// TestDirectoryProfileRacesDeactivation runs profile changes concurrently
// with the deactivation: however they interleave, no entry survives.
func TestDirectoryProfileRacesDeactivation(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			ctx := context.Background()
			s := dirService(t, engine)
			for round := range 3 {
				u := register(t, s, fmt.Sprintf("racer%d", round)).UserID
				var wg sync.WaitGroup
				for i := range 4 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						_, err := s.UpdateProfile(ctx, u, func(p Profile) error {
							p[FieldDisplayName] = mustJSON(fmt.Sprintf("Name%d Word%d", i, round))
							return nil
						})
						if err != nil {
							t.Error(err)
						}
					}()
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := s.Deactivate(ctx, u); err != nil {
						t.Error(err)
					}
				}()
				wg.Wait()
				if got := entries(t, s, u); len(got) != 0 {
					t.Fatalf("round %d: a deactivated user keeps entries %q", round, got)
				}
			}
		})
	}
}

// TestIndexDirectoryUser is the backfill's unit: it (re)builds a user's
// entries from the account and profile, and is idempotent.
func TestIndexDirectoryUser(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			ctx := context.Background()
			s := dirService(t, engine)
			u := id.UserID("@old:test.local")
			// An account as an older release wrote it: no entries.
			acct, _ := json.Marshal(Account{CreatedMS: 1})
			if err := s.T.Put(ctx, table.Item{PK: userPK(u), SK: "account", Data: acct, Version: 1}, table.IfNotExists()); err != nil {
				t.Fatal(err)
			}
			if err := s.T.Put(ctx, profileItem(u, Profile{FieldDisplayName: mustJSON("Élodie Old")}, 1), table.IfNotExists()); err != nil {
				t.Fatal(err)
			}
			dirSearch(t, s, "elodie", nil)
			for range 2 {
				if err := IndexDirectoryUser(ctx, s.T, u); err != nil {
					t.Fatal(err)
				}
			}
			dirSearch(t, s, "elodie", []string{"old=Élodie Old"})
			// Missing accounts get nothing.
			if err := IndexDirectoryUser(ctx, s.T, "@ghost:test.local"); err != nil {
				t.Fatal(err)
			}
			dirSearch(t, s, "ghost", nil)
		})
	}
}

// BenchmarkSearchDirectory searches an index of 5,000 users (bolt): a
// selective term reads only its own entries; a one-letter term reads many.
func BenchmarkSearchDirectory(b *testing.B) {
	db := testtable.Open(b, "bolt")
	s := &Service{T: db, ServerName: "test.local"}
	ctx := context.Background()
	first := []string{"Ann", "Bob", "Cleo", "Dmitri", "Élodie", "Femi", "Grace", "Hiro", "Ines", "Jun"}
	for i := range 5000 {
		na := NewAccount{UserID: id.NewUserID(fmt.Sprintf("user%d", i), "test.local"), InhibitLogin: true,
			DisplayName: fmt.Sprintf("%s Family%d", first[i%len(first)], i)}
		if _, err := s.CreateAccount(ctx, na); err != nil {
			b.Fatal(err)
		}
	}
	for _, bc := range []struct{ name, term string }{{"selective", "family4999"}, {"one letter", "e"}, {"all", ""}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, _, err := s.SearchDirectory(ctx, FoldWords(bc.term), 5000); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestDirectoryLargestProfile: a display name near the profile limit, of
// many words, still fits the profile change's transaction on both engines.
func TestDirectoryLargestProfile(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			s := dirService(t, engine)
			u := register(t, s, "big").UserID
			var b strings.Builder
			for i := 0; b.Len() < MaxProfileBytes-1024; i++ {
				fmt.Fprintf(&b, "word%05d ", i)
			}
			setName(t, s, u, b.String())
			dirSearch(t, s, "word00003", []string{"big=" + b.String()})
			if got := entries(t, s, u); len(got) != 1+MaxDirectoryWords {
				t.Fatalf("%d entries, want %d", len(got), 1+MaxDirectoryWords)
			}
		})
	}
}
