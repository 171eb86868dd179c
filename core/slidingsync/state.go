package slidingsync

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strconv"
	"strings"

	"maunium.net/go/mautrix/id"
)

// Wildcard matches any type or state key in required_state.
const Wildcard = "*"

// Special state keys of the [type, state_key] form.
const (
	StateKeyMe   = "$ME"
	StateKeyLazy = "$LAZY"
)

const memberType = "m.room.member"

// StateSpec is the combined required_state of every rule a room matches:
// the union of their includes (MSC4186 "Combining room configs"), minus
// the excludes, with lazy members when any rule asks for them and none
// asks for every membership.
type StateSpec struct {
	all       bool
	types     map[string]bool    // [type, "*"]
	keys      map[string]bool    // ["*", key]
	pairs     map[[2]string]bool // [type, key]
	exclude   map[[2]string]bool
	exclTypes map[string]bool
	exclKeys  map[string]bool
	lazy      bool
}

// NewStateSpec combines required_state requests for user me ($ME).
func NewStateSpec(me id.UserID, reqs ...RequiredState) *StateSpec {
	s := &StateSpec{types: map[string]bool{}, keys: map[string]bool{}, pairs: map[[2]string]bool{},
		exclude: map[[2]string]bool{}, exclTypes: map[string]bool{}, exclKeys: map[string]bool{}}
	sub := func(k string) string {
		if k == StateKeyMe {
			return string(me)
		}
		return k
	}
	for _, r := range reqs {
		if r.Lazy {
			s.lazy = true
		}
		for _, p := range r.Include {
			t, k := p[0], sub(p[1])
			if t == memberType && k == StateKeyLazy {
				s.lazy = true
				continue
			}
			switch {
			case t == Wildcard && k == Wildcard:
				s.all = true
			case k == Wildcard:
				s.types[t] = true
			case t == Wildcard:
				s.keys[k] = true
			default:
				s.pairs[[2]string{t, k}] = true
			}
		}
		for _, p := range r.Exclude {
			t, k := p[0], sub(p[1])
			switch {
			case t == Wildcard && k == Wildcard:
				// Excluding everything: nothing but lazy members remains.
				s.all, s.types, s.keys, s.pairs = false, map[string]bool{}, map[string]bool{}, map[[2]string]bool{}
			case k == Wildcard:
				s.exclTypes[t] = true
			case t == Wildcard:
				s.exclKeys[k] = true
			default:
				s.exclude[[2]string{t, k}] = true
			}
		}
	}
	// Every membership requested explicitly makes lazy loading moot.
	if s.types[memberType] {
		s.lazy = false
	}
	return s
}

// Lazy reports whether memberships are loaded lazily.
func (s *StateSpec) Lazy() bool { return s.lazy }

// Empty reports whether no state at all is wanted.
func (s *StateSpec) Empty() bool {
	return !s.all && !s.lazy && len(s.types) == 0 && len(s.keys) == 0 && len(s.pairs) == 0
}

// Match reports whether the state entry (typ, key) is wanted, given the
// members lazy loading needs (lazy, may be nil). With lazy members a
// wildcard does not bring in every membership: only the lazy ones and
// those named explicitly.
func (s *StateSpec) Match(typ, key string, lazy map[id.UserID]bool) bool {
	if typ == memberType && s.lazy && lazy[id.UserID(key)] {
		return true // lazy members are not filtered by exclude (MSC4186)
	}
	if s.exclude[[2]string{typ, key}] || s.exclTypes[typ] || s.exclKeys[key] {
		return false
	}
	if s.pairs[[2]string{typ, key}] || s.types[typ] {
		return true
	}
	if typ == memberType && s.lazy {
		return false
	}
	return s.all || s.keys[key]
}

// Hash identifies the spec and a timeline limit, so a connection can tell
// when a room's configuration changed since it was last sent.
func (s *StateSpec) Hash(timelineLimit int) string {
	var parts []string
	if s.all {
		parts = append(parts, "A")
	}
	if s.lazy {
		parts = append(parts, "L")
	}
	for t := range s.types {
		parts = append(parts, "T"+t)
	}
	for k := range s.keys {
		parts = append(parts, "K"+k)
	}
	for p := range s.pairs {
		parts = append(parts, "P"+p[0]+"\x1f"+p[1])
	}
	for p := range s.exclude {
		parts = append(parts, "X"+p[0]+"\x1f"+p[1])
	}
	for t := range s.exclTypes {
		parts = append(parts, "Y"+t)
	}
	for k := range s.exclKeys {
		parts = append(parts, "Z"+k)
	}
	sort.Strings(parts)
	h := sha256.Sum256([]byte(strings.Join(parts, "\x1e")))
	return hex.EncodeToString(h[:6]) + "." + strconv.Itoa(timelineLimit)
}

// hashLimit is the timeline limit a Hash was made with.
func hashLimit(h string) int {
	i := strings.LastIndexByte(h, '.')
	if i < 0 {
		return 0
	}
	n, _ := strconv.Atoi(h[i+1:])
	return n
}

// hashState is the state part of a Hash.
func hashState(h string) string {
	if i := strings.LastIndexByte(h, '.'); i >= 0 {
		return h[:i]
	}
	return h
}
