package accounts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// The user directory index lists every local account that is not
// deactivated, with its global display name and avatar, for the "search
// all local users" mode of the user directory. It lives in the secondary
// index, so a search reads only the entries of the word it looks for:
//
//	user#<@u:hs>  udir          GSI userdir / "!" <@u:hs>            one per listed user
//	user#<@u:hs>  udir#<word>   GSI userdir / <word> 0x1f <@u:hs>    one per indexed word
//
// Every entry carries the display name and avatar URL. The words are those
// of the localpart and then of the display name (FoldWords), distinct, at
// most MaxDirectoryWords, each cut to maxDirectoryWordBytes. The words of
// the server name are left out: every local user has them.
//
// The entries change in the same transaction as what they derive from:
// the account's creation (CreateAccount), every profile change
// (UpdateProfile and DeleteProfile, which also check the account's
// version, so a change racing a deactivation cannot list the user again)
// and deactivation (Deactivate drops them after flagging the account).
// Existing stores are backfilled by a data migration (IndexDirectoryUser).
const (
	// DirectoryIndex is the GSI partition of the directory entries.
	DirectoryIndex = "userdir"
	// MaxDirectoryWords bounds the words one user is indexed under.
	MaxDirectoryWords = 16

	maxDirectoryWordBytes = 64
	dirMarkerSK           = "udir"
	dirWordSKPrefix       = "udir#"
	dirMarkerGSKPrefix    = "!" // never starts a word: words are letters and digits
)

// DirectoryEntry is one local user as the directory index lists them.
type DirectoryEntry struct {
	UserID      id.UserID
	DisplayName string
	AvatarURL   string
}

type dirData struct {
	DisplayName string `json:"displayname,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// FoldWords lowercases s, strips its accents and splits it into words of
// letters and digits: the form both the directory's entries and search
// terms are compared in.
func FoldWords(s string) []string {
	var b strings.Builder
	for _, r := range norm.NFD.String(s) {
		if unicode.Is(unicode.Mn, r) {
			continue
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return strings.FieldsFunc(b.String(), func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
}

// MatchesAll reports whether every term begins one of words.
func MatchesAll(terms, words []string) bool {
	for _, t := range terms {
		found := false
		for _, w := range words {
			if strings.HasPrefix(w, t) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// cutWord shortens w to at most maxDirectoryWordBytes, on a rune boundary.
func cutWord(w string) string {
	if len(w) <= maxDirectoryWordBytes {
		return w
	}
	n := maxDirectoryWordBytes
	for n > 0 && !utf8.RuneStart(w[n]) {
		n--
	}
	return w[:n]
}

// directoryWords lists the words u is indexed under with displayName.
func directoryWords(u id.UserID, displayName string) []string {
	seen := map[string]bool{}
	var out []string
	for _, w := range append(FoldWords(u.Localpart()), FoldWords(displayName)...) {
		w = cutWord(w)
		if seen[w] {
			continue
		}
		if len(out) == MaxDirectoryWords {
			break
		}
		seen[w] = true
		out = append(out, w)
	}
	return out
}

func dirMarkerKey(u id.UserID) table.Key { return table.Key{PK: userPK(u), SK: dirMarkerSK} }
func dirWordKey(u id.UserID, w string) table.Key {
	return table.Key{PK: userPK(u), SK: dirWordSKPrefix + w}
}

// listed reports whether an account belongs in the directory: not
// deactivated, and not locked (as Synapse hides locked users by default).
func listed(a *Account) bool { return a != nil && !a.Deactivated && !a.Locked }

// directoryOps returns the unconditional writes that move u's entries from
// those of profile old (if wasListed) to those of profile p (if isListed).
// Deleting an entry that is not there is harmless, so the result is right
// whatever the entries were, as long as old is what they were made from.
// Profile writes pass wasListed = true whatever the account: entries may
// outlive a deactivation for a moment (until Deactivate drops them), and
// must never be left behind derived from a profile that is gone.
func directoryOps(u id.UserID, old Profile, wasListed bool, p Profile, isListed bool) []table.Op {
	var ops []table.Op
	keep := map[string]bool{}
	if isListed {
		d := dirData{DisplayName: p.String(FieldDisplayName), AvatarURL: p.String(FieldAvatarURL)}
		data, _ := json.Marshal(d)
		mk := dirMarkerKey(u)
		ops = append(ops, table.Put(table.Item{PK: mk.PK, SK: mk.SK, GPK: DirectoryIndex, GSK: dirMarkerGSKPrefix + string(u), Data: data}, table.Cond{}))
		for _, w := range directoryWords(u, d.DisplayName) {
			keep[w] = true
			k := dirWordKey(u, w)
			ops = append(ops, table.Put(table.Item{PK: k.PK, SK: k.SK, GPK: DirectoryIndex, GSK: w + "\x1f" + string(u), Data: data}, table.Cond{}))
		}
	}
	if wasListed {
		if !isListed {
			ops = append(ops, table.Delete(dirMarkerKey(u), table.Cond{}))
		}
		for _, w := range directoryWords(u, old.String(FieldDisplayName)) {
			if !keep[w] {
				ops = append(ops, table.Delete(dirWordKey(u, w), table.Cond{}))
			}
		}
	}
	return ops
}

// readAccountProfile reads the account (nil if none) and the profile (nil
// if none) with their versions, in one round trip.
func readAccountProfile(ctx context.Context, t table.Table, u id.UserID) (a *Account, av int64, p Profile, pv int64, err error) {
	items, err := t.GetMany(ctx, []table.Key{accountKey(u), profileKey(u)})
	if err != nil {
		return nil, 0, nil, 0, err
	}
	for _, it := range items {
		switch it.SK {
		case "account":
			a = &Account{}
			if err := json.Unmarshal(it.Data, a); err != nil {
				return nil, 0, nil, 0, fmt.Errorf("account %s: %w", u, err)
			}
			av = it.Version
		case "profile":
			if err := json.Unmarshal(it.Data, &p); err != nil {
				return nil, 0, nil, 0, fmt.Errorf("profile %s: %w", u, err)
			}
			if p == nil {
				p = Profile{}
			}
			pv = it.Version
		}
	}
	return a, av, p, pv, nil
}

// accountCheck is the transaction operation that holds while the account
// is as it was read (version av, or missing if a is nil).
func accountCheck(u id.UserID, a *Account, av int64) table.Op {
	if a == nil {
		return table.Check(accountKey(u), table.IfNotExists())
	}
	return table.Check(accountKey(u), table.IfVersion(av))
}

// profileCond is the condition of a write of the profile read at version
// pv (0: there was none).
func profileCond(pv int64) table.Cond {
	if pv == 0 {
		return table.IfNotExists()
	}
	return table.IfVersion(pv)
}

// IndexDirectoryUser writes u's directory entries from the account and
// profile as they are (none if the account is missing or deactivated),
// checking both in the same transaction. It is idempotent: the data
// migration that backfills the index calls it for every account.
func IndexDirectoryUser(ctx context.Context, t table.Table, u id.UserID) error {
	for range maxAttempts {
		a, av, p, pv, err := readAccountProfile(ctx, t, u)
		if err != nil {
			return err
		}
		ops := []table.Op{accountCheck(u, a, av), table.Check(profileKey(u), profileCond(pv))}
		// Entries of a deactivated account are dropped: its profile words
		// are the only ones it can have been listed under.
		ops = append(ops, directoryOps(u, p, true, p, listed(a))...)
		err = t.Transact(ctx, ops)
		if errors.Is(err, table.ErrConditionFailed) {
			continue
		}
		return err
	}
	return table.ErrConflict
}

// reindexDirectory brings u's entries in line with the account (after a
// deactivation, or a lock or unlock).
func (s *Service) reindexDirectory(ctx context.Context, u id.UserID) error {
	return IndexDirectoryUser(ctx, s.T, u)
}

// SearchDirectory returns the listed local users that every term (as
// FoldWords makes them) begins a word of, matched against the words of the
// user ID and display name, in no particular order. It queries the entries
// of the longest term that is not the start of a word of the server name
// (those match every local user), or the one entry per user when there is
// none. At most maxEntries entries are read: more reports that the search
// stopped there.
func (s *Service) SearchDirectory(ctx context.Context, terms []string, maxEntries int) (out []DirectoryEntry, more bool, err error) {
	serverWords := FoldWords(s.ServerName)
	prefix := dirMarkerGSKPrefix
	best := ""
	for _, t := range terms {
		if len(t) > len(best) && !MatchesAll([]string{t}, serverWords) {
			best = t
		}
	}
	if best != "" {
		prefix = cutWord(best)
	}
	q := table.Query{Index: table.IndexName, PK: DirectoryIndex, Prefix: prefix}
	seen := map[id.UserID]bool{}
	read := 0
	for {
		page, err := s.T.Query(ctx, q)
		if err != nil {
			return nil, false, err
		}
		for _, it := range page.Items {
			if read == maxEntries {
				return out, true, nil
			}
			read++
			u := id.UserID(strings.TrimPrefix(it.PK, "user#"))
			if seen[u] {
				continue
			}
			seen[u] = true
			var d dirData
			if err := json.Unmarshal(it.Data, &d); err != nil {
				continue // not an entry this code wrote: skip rather than fail the search
			}
			if MatchesAll(terms, append(FoldWords(string(u)), FoldWords(d.DisplayName)...)) {
				out = append(out, DirectoryEntry{UserID: u, DisplayName: d.DisplayName, AvatarURL: d.AvatarURL})
			}
		}
		if page.Next == "" {
			return out, false, nil
		}
		q.Cursor = page.Next
	}
}
