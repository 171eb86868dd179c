package clientapi

import (
	"reflect"
	"testing"
)

func TestFoldWords(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"Zoë Müller", []string{"zoe", "muller"}},
		{"@Bob_Smith:Example.org", []string{"bob", "smith", "example", "org"}},
		{"ÉLODIE", []string{"elodie"}},
		{"  ", []string{}},
		{"Łukasz", []string{"łukasz"}}, // no decomposition: kept as is, lowercased
		{"李小龍", []string{"李小龍"}},
	}
	for _, tc := range cases {
		if got := foldWords(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("foldWords(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestMatchesAll(t *testing.T) {
	words := foldWords("@bob:example.org Zoë Müller")
	cases := []struct {
		term string
		want bool
	}{
		{"zoe", true}, {"MÜL", true}, {"zoe mull", true}, {"bob", true}, {"example", true},
		{"oe", false}, {"zoe smith", false}, {"", true},
	}
	for _, tc := range cases {
		if got := matchesAll(foldWords(tc.term), words); got != tc.want {
			t.Errorf("matchesAll(%q) = %v, want %v", tc.term, got, tc.want)
		}
	}
}

func TestValidOrder(t *testing.T) {
	cases := []struct {
		in   string
		want bool
	}{
		{"a", true}, {"~~~", true}, {"", false}, {"é", false}, {"a\nb", false},
		{string(make([]byte, 51)), false}, {"01234567890123456789012345678901234567890123456789", true},
	}
	for _, tc := range cases {
		if got := validOrder(tc.in); got != tc.want {
			t.Errorf("validOrder(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
