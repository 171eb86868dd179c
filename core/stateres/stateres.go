// Package stateres implements the Matrix state resolution algorithms:
// version 1 (room version 1, v1.go), version 2 (room versions 2–11) and its
// room version 12 revision, as the spec's room version pages describe them.
//
// It is written here because the Matrix library we use (mautrix-go) has
// no state resolution, and the one that does (gomatrixserverlib) stops
// before room version 12. Authorization of each event is delegated to
// mautrix-go's eventauth, so the rules stay in one place.
package stateres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"maunium.net/go/mautrix/federation/eventauth"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// StateMap maps (type, state_key) to an event id.
type StateMap = map[pdu.StateKey]id.EventID

// Fetch returns the events with the given ids (any order; unknown ones
// left out) with InternalMeta.EventID set, and InternalMeta.Rejected for
// events that were rejected.
type Fetch func(ctx context.Context, ids []id.EventID) ([]*pdu.PDU, error)

// ErrUnsupported is returned for room versions that use state resolution v1.
var ErrUnsupported = errors.New("stateres: room version uses state resolution v1, which is not supported")

// Resolve returns the resolution of the given state sets.
func Resolve(ctx context.Context, rv id.RoomVersion, stateSets []StateMap, fetch Fetch) (StateMap, error) {
	if !rv.IsKnown() {
		return nil, fmt.Errorf("stateres: unknown room version %q", rv)
	}
	if len(stateSets) == 0 {
		return StateMap{}, nil
	}
	if len(stateSets) == 1 {
		return copyMap(stateSets[0]), nil
	}
	r := &resolver{ctx: ctx, rv: rv, fetch: fetch, events: map[id.EventID]*pdu.PDU{}}
	if rv.StateResVersion() == id.StateResV1 {
		return r.resolveV1(stateSets) // v1.go
	}
	return r.resolve(stateSets)
}

func copyMap(m StateMap) StateMap {
	out := make(StateMap, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

type resolver struct {
	ctx    context.Context
	rv     id.RoomVersion
	fetch  Fetch
	events map[id.EventID]*pdu.PDU
	chains map[id.EventID]map[id.EventID]struct{}
}

// load makes sure the events are in the cache.
func (r *resolver) load(ids []id.EventID) error {
	var missing []id.EventID
	for _, e := range ids {
		if _, ok := r.events[e]; !ok {
			missing = append(missing, e)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	got, err := r.fetch(r.ctx, missing)
	if err != nil {
		return fmt.Errorf("stateres: fetching events: %w", err)
	}
	for _, p := range got {
		r.events[p.InternalMeta.EventID] = p
	}
	for _, e := range missing {
		if _, ok := r.events[e]; !ok {
			r.events[e] = nil // unknown: remembered so it is not fetched again
		}
	}
	return nil
}

func (r *resolver) event(e id.EventID) *pdu.PDU { return r.events[e] }

// authChain returns every event reachable through auth_events from e (not e).
func (r *resolver) authChain(e id.EventID) (map[id.EventID]struct{}, error) {
	if r.chains == nil {
		r.chains = map[id.EventID]map[id.EventID]struct{}{}
	}
	if c, ok := r.chains[e]; ok {
		return c, nil
	}
	chain := map[id.EventID]struct{}{}
	frontier := []id.EventID{e}
	for len(frontier) > 0 {
		if err := r.load(frontier); err != nil {
			return nil, err
		}
		var next []id.EventID
		for _, f := range frontier {
			p := r.event(f)
			if p == nil {
				continue
			}
			for _, a := range p.AuthEvents {
				if _, seen := chain[a]; !seen {
					chain[a] = struct{}{}
					next = append(next, a)
				}
			}
		}
		frontier = next
	}
	r.chains[e] = chain
	return chain, nil
}

func (r *resolver) resolve(sets []StateMap) (StateMap, error) {
	// Unconflicted state map and conflicted state set.
	unconflicted := StateMap{}
	conflicted := map[id.EventID]struct{}{}
	keys := map[pdu.StateKey]struct{}{}
	for _, s := range sets {
		for k := range s {
			keys[k] = struct{}{}
		}
	}
	for k := range keys {
		first, same := id.EventID(""), true
		for i, s := range sets {
			v, ok := s[k]
			if !ok {
				same = false
				continue
			}
			if i == 0 {
				first = v
			} else if v != first {
				same = false
			}
		}
		if same && first != "" {
			unconflicted[k] = first
			continue
		}
		for _, s := range sets {
			if v, ok := s[k]; ok {
				conflicted[v] = struct{}{}
			}
		}
	}
	if len(conflicted) == 0 {
		return unconflicted, nil
	}

	// Auth difference: ∪ C_i − ∩ C_i over the full auth chains of each set.
	full := map[id.EventID]struct{}{}
	for e := range conflicted {
		full[e] = struct{}{}
	}
	counts := map[id.EventID]int{}
	for _, s := range sets {
		union := map[id.EventID]struct{}{}
		for _, e := range s {
			c, err := r.authChain(e)
			if err != nil {
				return nil, err
			}
			for a := range c {
				union[a] = struct{}{}
			}
		}
		for a := range union {
			counts[a]++
		}
	}
	for a, n := range counts {
		if n < len(sets) {
			full[a] = struct{}{}
		}
	}
	if r.rv.StateResVersion() == id.StateResV2_1 {
		sub, err := r.conflictedSubgraph(conflicted)
		if err != nil {
			return nil, err
		}
		for e := range sub {
			full[e] = struct{}{}
		}
	}
	fullIDs := make([]id.EventID, 0, len(full))
	for e := range full {
		fullIDs = append(fullIDs, e)
	}
	if err := r.load(fullIDs); err != nil {
		return nil, err
	}

	// Step 1: power events of the full conflicted set and their auth
	// chains within it, in reverse topological power order.
	powerSet := map[id.EventID]struct{}{}
	for _, e := range fullIDs {
		p := r.event(e)
		if p == nil || !isPowerEvent(p) {
			continue
		}
		powerSet[e] = struct{}{}
		chain, err := r.authChain(e)
		if err != nil {
			return nil, err
		}
		for a := range chain {
			if _, ok := full[a]; ok && r.event(a) != nil {
				powerSet[a] = struct{}{}
			}
		}
	}
	powerList, err := r.reverseTopologicalPowerOrder(powerSet)
	if err != nil {
		return nil, err
	}

	// Step 2: iterative auth checks from the unconflicted state (v2–v11)
	// or from an empty state (v12).
	start := copyMap(unconflicted)
	if r.rv.StateResVersion() == id.StateResV2_1 {
		start = StateMap{}
	}
	partial, err := r.iterativeAuthChecks(start, powerList)
	if err != nil {
		return nil, err
	}

	// Step 3: the rest of the full conflicted set in mainline order based on
	// the partially resolved power levels.
	var rest []id.EventID
	for _, e := range fullIDs {
		if _, inPower := powerSet[e]; !inPower && r.event(e) != nil {
			rest = append(rest, e)
		}
	}
	rest, err = r.mainlineOrder(rest, partial[pdu.StateKey{Type: "m.room.power_levels"}])
	if err != nil {
		return nil, err
	}

	// Step 4: iterative auth checks on the partial state.
	resolved, err := r.iterativeAuthChecks(partial, rest)
	if err != nil {
		return nil, err
	}

	// Step 5: the unconflicted state map wins.
	for k, v := range unconflicted {
		resolved[k] = v
	}
	return resolved, nil
}

// conflictedSubgraph returns the events on auth_events paths between
// events of the conflicted set (endpoints included).
func (r *resolver) conflictedSubgraph(conflicted map[id.EventID]struct{}) (map[id.EventID]struct{}, error) {
	ancestors := map[id.EventID]struct{}{}
	for c := range conflicted {
		chain, err := r.authChain(c)
		if err != nil {
			return nil, err
		}
		for a := range chain {
			ancestors[a] = struct{}{}
		}
	}
	memo := map[id.EventID]bool{}
	var reaches func(e id.EventID, depth int) bool
	reaches = func(e id.EventID, depth int) bool {
		if v, ok := memo[e]; ok {
			return v
		}
		if _, ok := conflicted[e]; ok {
			memo[e] = true
			return true
		}
		memo[e] = false // guards against cycles in malformed graphs
		p := r.event(e)
		if p == nil || depth > 100000 {
			return false
		}
		for _, a := range p.AuthEvents {
			if reaches(a, depth+1) {
				memo[e] = true
				return true
			}
		}
		return false
	}
	out := map[id.EventID]struct{}{}
	for c := range conflicted {
		out[c] = struct{}{}
	}
	for a := range ancestors {
		if reaches(a, 0) {
			out[a] = struct{}{}
		}
	}
	return out, nil
}

// isPowerEvent: power levels, join rules, or a kick/ban of someone else.
func isPowerEvent(p *pdu.PDU) bool {
	if p.StateKey == nil {
		return false
	}
	switch p.Type {
	case "m.room.power_levels", "m.room.join_rules":
		return true
	case "m.room.member":
		var c struct {
			Membership string `json:"membership"`
		}
		_ = json.Unmarshal(p.Content, &c)
		return (c.Membership == "leave" || c.Membership == "ban") && string(p.Sender) != *p.StateKey
	}
	return false
}

// createEvent finds the room's create event for an event: in its auth
// events before v12, or through the room id in v12.
func (r *resolver) createEvent(p *pdu.PDU) *pdu.PDU {
	if r.rv.RoomIDIsCreateEventID() {
		e := id.EventID("$" + string(p.RoomID)[1:])
		if p.Type == "m.room.create" {
			return p
		}
		_ = r.load([]id.EventID{e})
		return r.event(e)
	}
	if p.Type == "m.room.create" {
		return p
	}
	for _, a := range p.AuthEvents {
		if ae := r.event(a); ae != nil && ae.Type == "m.room.create" {
			return ae
		}
	}
	return nil
}

// senderPower is the sender's power level according to the event's own
// auth events (the comparison of the reverse topological power ordering).
func (r *resolver) senderPower(p *pdu.PDU) int64 {
	create := r.createEvent(p)
	if create != nil && r.rv.PrivilegedRoomCreators() {
		if create.Sender == p.Sender {
			return math.MaxInt64
		}
		var cc struct {
			Additional []id.UserID `json:"additional_creators"`
		}
		_ = json.Unmarshal(create.Content, &cc)
		for _, u := range cc.Additional {
			if u == p.Sender {
				return math.MaxInt64
			}
		}
	}
	for _, a := range p.AuthEvents {
		ae := r.event(a)
		if ae == nil || ae.Type != "m.room.power_levels" || ae.StateKey == nil || *ae.StateKey != "" {
			continue
		}
		var c struct {
			Users        map[id.UserID]json.Number `json:"users"`
			UsersDefault json.Number               `json:"users_default"`
		}
		_ = json.Unmarshal(ae.Content, &c)
		if v, ok := c.Users[p.Sender]; ok {
			return numberValue(v)
		}
		return numberValue(c.UsersDefault)
	}
	if create != nil && create.Sender == p.Sender {
		return 100
	}
	return 0
}

func numberValue(n json.Number) int64 {
	if n == "" {
		return 0
	}
	if i, err := n.Int64(); err == nil {
		return i
	}
	if f, err := n.Float64(); err == nil {
		return int64(f)
	}
	return 0
}

// reverseTopologicalPowerOrder sorts events with Kahn's algorithm over the
// auth graph restricted to the set, choosing at each step the candidate with
// the highest sender power, then the lowest timestamp, then the lowest id.
func (r *resolver) reverseTopologicalPowerOrder(set map[id.EventID]struct{}) ([]id.EventID, error) {
	indeg := map[id.EventID]int{}
	children := map[id.EventID][]id.EventID{}
	power := map[id.EventID]int64{}
	for e := range set {
		p := r.event(e)
		if err := r.load(p.AuthEvents); err != nil {
			return nil, err
		}
		indeg[e] += 0
		for _, a := range p.AuthEvents {
			if _, ok := set[a]; ok {
				indeg[e]++
				children[a] = append(children[a], e)
			}
		}
		power[e] = r.senderPower(p)
	}
	less := func(x, y id.EventID) bool {
		if power[x] != power[y] {
			return power[x] > power[y]
		}
		tx, ty := r.event(x).OriginServerTS, r.event(y).OriginServerTS
		if tx != ty {
			return tx < ty
		}
		return x < y
	}
	var ready []id.EventID
	for e, d := range indeg {
		if d == 0 {
			ready = append(ready, e)
		}
	}
	out := make([]id.EventID, 0, len(set))
	for len(ready) > 0 {
		best := 0
		for i := 1; i < len(ready); i++ {
			if less(ready[i], ready[best]) {
				best = i
			}
		}
		e := ready[best]
		ready = append(ready[:best], ready[best+1:]...)
		out = append(out, e)
		for _, c := range children[e] {
			indeg[c]--
			if indeg[c] == 0 {
				ready = append(ready, c)
			}
		}
	}
	if len(out) != len(set) {
		return nil, errors.New("stateres: auth graph has a cycle")
	}
	return out, nil
}

// powerLevelsAuthEvent returns the power levels event among p's auth events.
func (r *resolver) powerLevelsAuthEvent(p *pdu.PDU) (id.EventID, error) {
	if err := r.load(p.AuthEvents); err != nil {
		return "", err
	}
	for _, a := range p.AuthEvents {
		if ae := r.event(a); ae != nil && ae.Type == "m.room.power_levels" && ae.StateKey != nil && *ae.StateKey == "" {
			return a, nil
		}
	}
	return "", nil
}

// mainlineOrder sorts events by their mainline position relative to the
// power levels event pl (greater position first), then timestamp, then id.
func (r *resolver) mainlineOrder(evs []id.EventID, pl id.EventID) ([]id.EventID, error) {
	mainline := map[id.EventID]int{}
	for i, cur := 0, pl; cur != ""; i++ {
		if _, loop := mainline[cur]; loop {
			break
		}
		mainline[cur] = i
		if err := r.load([]id.EventID{cur}); err != nil {
			return nil, err
		}
		p := r.event(cur)
		if p == nil {
			break
		}
		next, err := r.powerLevelsAuthEvent(p)
		if err != nil {
			return nil, err
		}
		cur = next
	}
	pos := map[id.EventID]int{}
	for _, e := range evs {
		position := math.MaxInt
		seen := map[id.EventID]bool{}
		cur := r.event(e)
		for cur != nil {
			next, err := r.powerLevelsAuthEvent(cur)
			if err != nil {
				return nil, err
			}
			if next == "" || seen[next] {
				break
			}
			seen[next] = true
			if i, ok := mainline[next]; ok {
				position = i
				break
			}
			cur = r.event(next)
		}
		pos[e] = position
	}
	out := append([]id.EventID(nil), evs...)
	sort.SliceStable(out, func(i, j int) bool {
		x, y := out[i], out[j]
		if pos[x] != pos[y] {
			return pos[x] > pos[y]
		}
		tx, ty := r.event(x).OriginServerTS, r.event(y).OriginServerTS
		if tx != ty {
			return tx < ty
		}
		return x < y
	})
	return out, nil
}

// iterativeAuthChecks applies each event to the state if it passes the
// authorization rules against that state (completed from its own
// non-rejected auth events where the state lacks a needed key).
func (r *resolver) iterativeAuthChecks(state StateMap, evs []id.EventID) (StateMap, error) {
	state = copyMap(state)
	for _, e := range evs {
		p := r.event(e)
		if p == nil || p.StateKey == nil {
			continue
		}
		if err := r.load(p.AuthEvents); err != nil {
			return nil, err
		}
		authByKey := map[pdu.StateKey]*pdu.PDU{}
		for _, a := range p.AuthEvents {
			if ae := r.event(a); ae != nil && !ae.InternalMeta.Rejected && ae.StateKey != nil {
				authByKey[pdu.StateKey{Type: ae.Type, StateKey: *ae.StateKey}] = ae
			}
		}
		var auth []*pdu.PDU
		var needed []id.EventID
		selection := p.AuthEventSelection(r.rv)
		if !r.rv.RoomIDIsCreateEventID() {
			selection.Add("m.room.create", "")
		}
		for _, k := range selection {
			if v, ok := state[k]; ok {
				needed = append(needed, v)
			} else if ae := authByKey[k]; ae != nil {
				auth = append(auth, ae)
			}
		}
		if err := r.load(needed); err != nil {
			return nil, err
		}
		for _, v := range needed {
			if ae := r.event(v); ae != nil {
				auth = append(auth, ae)
			}
		}
		if auth == nil {
			auth = []*pdu.PDU{}
		}
		getEvents := func(ids []id.EventID) ([]*pdu.PDU, error) {
			if err := r.load(ids); err != nil {
				return nil, err
			}
			var out []*pdu.PDU
			for _, i := range ids {
				if ev := r.event(i); ev != nil {
					out = append(out, ev)
				}
			}
			return out, nil
		}
		if err := eventauth.Authorize(r.rv, p, auth, getEvents, noKeys); err != nil {
			continue // not allowed: ignored
		}
		state[pdu.StateKey{Type: p.Type, StateKey: *p.StateKey}] = e
	}
	return state, nil
}

// noKeys: third-party invite signatures cannot be checked during state
// resolution without network access; such events fail closed.
func noKeys(string, id.KeyID, time.Time) (id.SigningKey, time.Time, error) {
	return "", time.Time{}, errors.New("stateres: no key lookup")
}
