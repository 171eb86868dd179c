package migrate_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/accounts"
	"github.com/cirrus-matrix/cirrus/core/migrate"
	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/internal/testtable"
)

// TestUserDirectoryBackfill opens a store of format 2 (accounts and
// profiles but no directory entries) with this release: the step to format
// 3 must index every active account, and no deactivated one, whatever the
// scan's pages, with several processes migrating at once.
func TestUserDirectoryBackfill(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			ctx := context.Background()
			tb := testtable.Open(t, engine)
			if err := migrate.Up(ctx, tb, migrate.Steps[:2]); err != nil {
				t.Fatal(err)
			}
			// Old accounts, written as format 2 did. Padding makes the
			// account items large, so that the scan takes several pages.
			pad := strings.Repeat("x", 300*1024)
			type old struct {
				local, name string
				deactivated bool
			}
			users := []old{
				{"alice", "Alice Liddell", false}, {"bob", "Zoë Müller", false},
				{"carol", "", false}, {"dave", "Dave Gone", true}, {"erin", "Erin Big", false},
			}
			for _, u := range users {
				uid := id.NewUserID(u.local, "test.local")
				acct, _ := json.Marshal(map[string]any{"created_ts": 1, "deactivated": u.deactivated, "pad": pad})
				prof, _ := json.Marshal(map[string]string{"displayname": u.name})
				for _, it := range []table.Item{
					{PK: "user#" + string(uid), SK: "account", Data: acct, Version: 1},
					{PK: "user#" + string(uid), SK: "profile", Data: prof, Version: 1},
					{PK: "user#" + string(uid), SK: "device#D", Data: []byte(`{}`), Version: 1},
				} {
					if err := tb.Put(ctx, it, table.IfNotExists()); err != nil {
						t.Fatal(err)
					}
				}
			}
			// Something else with an "account" sort key is not a user.
			if err := tb.Put(ctx, table.Item{PK: "other#1", SK: "account", Data: []byte(`{}`)}, table.Cond{}); err != nil {
				t.Fatal(err)
			}
			acc := &accounts.Service{T: tb, ServerName: "test.local"}
			if found, _, err := acc.SearchDirectory(ctx, nil, 100); err != nil || len(found) != 0 {
				t.Fatalf("entries before the migration: %v %v", found, err)
			}

			var wg sync.WaitGroup
			for range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := migrate.Up(ctx, tb, migrate.Steps); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			if v, err := migrate.Version(ctx, tb); err != nil || v != migrate.Current(migrate.Steps) || v < 3 {
				t.Fatalf("format %d %v", v, err)
			}

			cases := []struct {
				term string
				want []string
			}{
				{"", []string{"@alice:test.local=Alice Liddell", "@bob:test.local=Zoë Müller", "@carol:test.local=", "@erin:test.local=Erin Big"}},
				{"zoe mul", []string{"@bob:test.local=Zoë Müller"}},
				{"lidd", []string{"@alice:test.local=Alice Liddell"}},
				{"dave", nil},
				{"gone", nil},
			}
			for _, tc := range cases {
				// The index is eventually consistent on DynamoDB; the
				// stand-in answers at once.
				found, more, err := acc.SearchDirectory(ctx, accounts.FoldWords(tc.term), 100)
				if err != nil || more {
					t.Fatalf("search %q: %v %v", tc.term, more, err)
				}
				var got []string
				for _, e := range found {
					got = append(got, fmt.Sprintf("%s=%s", e.UserID, e.DisplayName))
				}
				slices.Sort(got)
				if !slices.Equal(got, tc.want) {
					t.Fatalf("search %q after the backfill: %q, want %q", tc.term, got, tc.want)
				}
			}
		})
	}
}

// TestScanSKPages checks the engines' scan on its own: every item with the
// sort key, each once, across pages, and nothing else.
func TestScanSKPages(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			ctx := context.Background()
			tb := testtable.Open(t, engine)
			big := make([]byte, 200*1024)
			want := map[string]bool{}
			for i := range 12 {
				pk := fmt.Sprintf("p%02d", i)
				want[pk] = true
				if err := tb.Put(ctx, table.Item{PK: pk, SK: "wanted", Data: big}, table.Cond{}); err != nil {
					t.Fatal(err)
				}
				if err := tb.Put(ctx, table.Item{PK: pk, SK: "other", Data: []byte("x")}, table.Cond{}); err != nil {
					t.Fatal(err)
				}
			}
			sc, ok := tb.(table.Scanner)
			if !ok {
				t.Fatalf("%s does not implement table.Scanner", engine)
			}
			got := map[string]bool{}
			pages, cursor := 0, ""
			for {
				page, err := sc.ScanSK(ctx, "wanted", cursor)
				if err != nil {
					t.Fatal(err)
				}
				pages++
				for _, it := range page.Items {
					if it.SK != "wanted" || got[it.PK] || len(it.Data) != len(big) {
						t.Fatalf("unexpected or repeated item %s/%s", it.PK, it.SK)
					}
					got[it.PK] = true
				}
				if page.Next == "" {
					break
				}
				cursor = page.Next
			}
			if len(got) != len(want) || pages < 2 {
				t.Fatalf("scan found %d of %d items in %d pages", len(got), len(want), pages)
			}
			if _, err := sc.ScanSK(ctx, "wanted", "not a cursor"); err == nil {
				t.Fatal("a bad cursor was accepted")
			}
		})
	}
}
