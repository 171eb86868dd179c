package accounts

import (
	"context"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"
)

func TestSSOLocalpart(t *testing.T) {
	for in, want := range map[string]string{
		"alice":             "alice",
		"Alice Smith":       "alice_smith",
		"alice@example.org": "alice",
		"  Zoë.Ünicode  ":   "zo_._nicode",
		"__weird!!name__":   "weird_name",
		"@":                 "",
		"!!!":               "",
		"a/b+c=d-e.f":       "a/b+c=d-e.f",
	} {
		if got := SSOLocalpart(in); got != want {
			t.Errorf("SSOLocalpart(%q) = %q, want %q", in, got, want)
		}
	}
	long := ""
	for range 100 {
		long += "a"
	}
	if got := SSOLocalpart(long); len(got) != 64 {
		t.Errorf("long claim gives %d characters, want 64", len(got))
	}
}

func TestProvisionSSOUserSkipsReservedIDs(t *testing.T) {
	ctx := context.Background()
	bridge := func(u id.UserID) bool { return strings.HasPrefix(string(u), "@bridge_") }
	tests := []struct {
		name, subject, hint string
		reserved            func(id.UserID) bool
		want                id.UserID
	}{
		{"free name", "s1", "alice", bridge, "@alice:test.local"},
		{"reserved name falls back to user", "s2", "bridge_bob", bridge, "@user:test.local"},
		{"no predicate", "s3", "bridge_carol", nil, "@bridge_carol:test.local"},
		{"fallback numbered when taken", "s4", "bridge_dave", bridge, "@user2:test.local"},
	}
	s, _ := newService(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.ProvisionSSOUser(ctx, "idp", tc.subject, tc.hint, "", tc.reserved)
			if err != nil || got != tc.want {
				t.Fatalf("ProvisionSSOUser = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	everything := func(id.UserID) bool { return true }
	if got, err := s.ProvisionSSOUser(ctx, "idp", "s5", "eve", "", everything); err == nil {
		t.Fatalf("every ID reserved: got %q, want an error", got)
	}
}
