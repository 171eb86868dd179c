// Package search is server-side full-text search over room events (spec
// "Server Side Search", POST /search): an inverted index kept in the table
// port, so it works the same on bbolt and on DynamoDB, and the query that
// reads it.
//
// Text is normalised before it is indexed or searched: Unicode NFKD with
// the combining marks removed (so "café" and "cafe" are one word), case
// folded, split into runs of letters and digits, English stop words
// dropped and the rest stemmed with the Snowball English stemmer (so
// "running" and "runs" are one term). Words of other Latin-script languages
// are matched without their accents but are not stemmed; scripts written
// without spaces (Chinese, Japanese) are matched by whole runs only.
package search

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/kljensen/snowball/english"
	"golang.org/x/text/cases"
	"golang.org/x/text/runes"
	"golang.org/x/text/transform"
	"golang.org/x/text/unicode/norm"
)

// Limits on what one event contributes to the index.
const (
	// MaxTermBytes drops longer words (hashes, URLs without punctuation):
	// they are rarely searched for and would make long keys.
	MaxTermBytes = 64
	// MaxTermsPerEvent bounds the postings (so the writes) one event makes;
	// a long message is indexed by its first distinct terms.
	MaxTermsPerEvent = 200
	// MaxQueryTerms bounds the words of a search (each is walked in
	// step); later words are ignored.
	MaxQueryTerms = 16
)

// fold is the normalisation chain. A transform.Transformer keeps state, so
// each call builds its own (they are cheap).
func fold(s string) string {
	t := transform.Chain(norm.NFKD, runes.Remove(runes.In(unicode.Mn)), cases.Fold(), norm.NFC)
	out, _, err := transform.String(t, s)
	if err != nil {
		return strings.ToLower(s)
	}
	return out
}

// splitWords cuts s into runs of letters and digits.
func splitWords(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
}

// term turns one folded word into its index term, or "" when the word is
// not indexed (a stop word, a single letter, too long).
func term(w string) string {
	if len(w) > MaxTermBytes {
		return ""
	}
	if utf8.RuneCountInString(w) < 2 {
		if r, _ := utf8.DecodeRuneInString(w); !unicode.IsDigit(r) {
			return ""
		}
		return w
	}
	if english.IsStopWord(w) {
		return ""
	}
	// The stemmer rewrites ASCII English suffixes; other words pass through.
	return english.Stem(w, true)
}

// Terms returns the index terms of text with how often each occurs, and
// the number of indexed words (the document length used by ranking). At
// most MaxTermsPerEvent distinct terms are kept.
func Terms(text string) (tf map[string]int, length int) {
	tf = map[string]int{}
	for _, w := range splitWords(fold(text)) {
		t := term(w)
		if t == "" {
			continue
		}
		if _, ok := tf[t]; !ok && len(tf) >= MaxTermsPerEvent {
			continue
		}
		tf[t]++
		length++
	}
	return tf, length
}

// QueryTerms returns the distinct terms of a search string, in order (at
// most MaxQueryTerms).
func QueryTerms(q string) []string {
	seen := map[string]bool{}
	var out []string
	for _, w := range splitWords(fold(q)) {
		if t := term(w); t != "" && !seen[t] && len(out) < MaxQueryTerms {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out
}

// Highlights returns the words of text, as written there, whose terms are
// among terms: what a client should highlight (stemming means the words in
// a result may differ from the words searched for).
func Highlights(text string, terms map[string]bool) []string {
	var out []string
	for _, w := range splitWords(text) {
		if terms[term(fold(w))] {
			out = append(out, w)
		}
	}
	return out
}
