package clientsync

import "testing"

func TestTokenRoundTrip(t *testing.T) {
	for _, tk := range []Token{{}, {Events: 1, AccountData: 2, Receipts: 3, Typing: 4, ToDevice: 5, DeviceLists: 6, Presence: 7, Unread: 8},
		{Events: 1 << 40, ToDevice: 7}} {
		got, ok := ParseToken(tk.String())
		if !ok || got != tk {
			t.Fatalf("%+v → %q → %+v %v", tk, tk.String(), got, ok)
		}
	}
	if s := (Token{1, 2, 3, 4, 5, 6, 7, 8, false}).String(); s != "s1_2_3_4_5_6_7_8" {
		t.Fatalf("format %q", s)
	}
}

func TestParseToken(t *testing.T) {
	good := map[string]Token{
		"s0_0_0_0_0_0_0_0":         {},
		"s10_20_30_40_50_60_70_80": {10, 20, 30, 40, 50, 60, 70, 80, false},
		"s10_20_30_40_50_60_70":    {10, 20, 30, 40, 50, 60, 70, 0, true}, // before the unread stream
		"s10_20_30_40_50_60":       {10, 20, 30, 40, 50, 60, 0, 0, true},  // before presence
		"s1_2_3_4_5":               {1, 2, 3, 4, 5, 0, 0, 0, true},        // before device lists
	}
	for s, want := range good {
		if got, ok := ParseToken(s); !ok || got != want {
			t.Errorf("%q: %+v %v, want %+v", s, got, ok, want)
		}
	}
	for _, s := range []string{"", "s", "t5", "s1", "s1_2_3_4", "s1_2_3_4_5_6_7_8_9", "s1__3_4_5_6", "s-1_2_3_4_5_6",
		"s+1_2_3_4_5_6", "s01_2_3_4_5_6", "s1_2_3_4_5_x", "S1_2_3_4_5_6", "s1_2_3_4_5_6 ", "s99999999999999999999_0_0_0_0_0",
		"s1.5_2_3_4_5_6", "s1_2_3_4_5_0x1"} {
		if got, ok := ParseToken(s); ok {
			t.Errorf("%q accepted as %+v", s, got)
		}
	}
}
