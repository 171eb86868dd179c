package accounts

import "testing"

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
