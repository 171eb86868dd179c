package stateres

import (
	"crypto/sha1"
	"encoding/hex"
	"sort"

	"maunium.net/go/mautrix/federation/eventauth"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// State resolution v1 (room version 1), as the spec's "Room Version 1"
// describes it: the union of the unconflicted state, then the conflicted
// m.room.power_levels, m.room.join_rules and each m.room.member key in
// turn, each resolved by walking its candidates from the oldest (ascending
// depth, then descending sha1 of the event id) and keeping the last one
// that the authorization rules allow against the state so far; every other
// conflicted key takes the newest candidate (highest depth, lowest sha1)
// that passes authorization. A key present in only some of the sets is not
// a conflict.
func (r *resolver) resolveV1(sets []StateMap) (StateMap, error) {
	unconflicted := StateMap{}
	conflicted := map[pdu.StateKey][]id.EventID{}
	for _, st := range sets {
		for k, e := range st {
			if prev, ok := unconflicted[k]; ok && prev != e {
				delete(unconflicted, k)
				conflicted[k] = append(conflicted[k], prev)
			}
			if cands, ok := conflicted[k]; ok {
				if !containsID(cands, e) {
					conflicted[k] = append(cands, e)
				}
				continue
			}
			unconflicted[k] = e
		}
	}
	if len(conflicted) == 0 {
		return unconflicted, nil
	}
	var all []id.EventID
	for _, cands := range conflicted {
		all = append(all, cands...)
	}
	if err := r.load(all); err != nil {
		return nil, err
	}
	// The state authorization runs against: the unconflicted state for the
	// keys the conflicted events' auth rules look at, updated as keys are
	// resolved.
	authState := StateMap{}
	for _, e := range all {
		p := r.event(e)
		if p == nil {
			continue
		}
		for _, k := range append(p.AuthEventSelection(r.rv), pdu.StateKey{Type: "m.room.create"}) {
			if v, ok := unconflicted[k]; ok {
				authState[k] = v
			}
		}
	}
	resolved := StateMap{}
	pass := func(match func(pdu.StateKey) bool, pick func([]*pdu.PDU, StateMap) (*pdu.PDU, error)) error {
		keys := make([]pdu.StateKey, 0, len(conflicted))
		for k := range conflicted {
			if _, done := resolved[k]; !done && match(k) {
				keys = append(keys, k)
			}
		}
		// Same input, same answer: keys in a fixed order.
		sort.Slice(keys, func(i, j int) bool {
			if keys[i].Type != keys[j].Type {
				return keys[i].Type < keys[j].Type
			}
			return keys[i].StateKey < keys[j].StateKey
		})
		for _, k := range keys {
			var evs []*pdu.PDU
			for _, e := range conflicted[k] {
				if p := r.event(e); p != nil {
					evs = append(evs, p)
				}
			}
			if len(evs) == 0 {
				continue
			}
			w, err := pick(evs, authState)
			if err != nil {
				return err
			}
			resolved[k] = w.InternalMeta.EventID
		}
		// Later passes authorize against what this one chose.
		for k, v := range resolved {
			authState[k] = v
		}
		return nil
	}
	isType := func(t string) func(pdu.StateKey) bool {
		return func(k pdu.StateKey) bool { return k.Type == t }
	}
	for _, t := range []string{"m.room.power_levels", "m.room.join_rules", "m.room.member"} {
		if err := pass(isType(t), r.v1AuthEvents); err != nil {
			return nil, err
		}
	}
	if err := pass(func(pdu.StateKey) bool { return true }, r.v1NormalEvents); err != nil {
		return nil, err
	}
	out := unconflicted
	for k, v := range resolved {
		out[k] = v
	}
	return out, nil
}

func containsID(ids []id.EventID, e id.EventID) bool {
	for _, x := range ids {
		if x == e {
			return true
		}
	}
	return false
}

// v1Order sorts newest first: descending depth, then ascending sha1 of the
// event id (hex), as Synapse and the spec order them.
func v1Order(evs []*pdu.PDU) {
	sha := func(p *pdu.PDU) string {
		h := sha1.Sum([]byte(p.InternalMeta.EventID))
		return hex.EncodeToString(h[:])
	}
	sort.SliceStable(evs, func(i, j int) bool {
		if evs[i].Depth != evs[j].Depth {
			return evs[i].Depth > evs[j].Depth
		}
		return sha(evs[i]) < sha(evs[j])
	})
}

// v1AuthEvents resolves a key whose events affect authorization: from the
// oldest candidate on, each next one must be allowed with the previous
// in place; the last allowed one wins.
func (r *resolver) v1AuthEvents(evs []*pdu.PDU, state StateMap) (*pdu.PDU, error) {
	v1Order(evs)
	// oldest first
	for i, j := 0, len(evs)-1; i < j; i, j = i+1, j-1 {
		evs[i], evs[j] = evs[j], evs[i]
	}
	st := copyMap(state)
	prev := evs[0]
	for _, ev := range evs[1:] {
		st[pdu.StateKey{Type: prev.Type, StateKey: *prev.StateKey}] = prev.InternalMeta.EventID
		ok, err := r.v1Allowed(ev, st)
		if err != nil {
			return nil, err
		}
		if !ok {
			return prev, nil
		}
		prev = ev
	}
	return prev, nil
}

// v1NormalEvents picks the newest candidate that passes authorization, or
// the oldest if none does.
func (r *resolver) v1NormalEvents(evs []*pdu.PDU, state StateMap) (*pdu.PDU, error) {
	v1Order(evs)
	for _, ev := range evs {
		ok, err := r.v1Allowed(ev, state)
		if err != nil {
			return nil, err
		}
		if ok {
			return ev, nil
		}
	}
	return evs[len(evs)-1], nil
}

// v1Allowed checks an event's state-dependent authorization rules against
// the events of state that its auth event selection names.
func (r *resolver) v1Allowed(p *pdu.PDU, state StateMap) (bool, error) {
	sel := p.AuthEventSelection(r.rv)
	var ids []id.EventID
	for _, k := range sel {
		if v, ok := state[k]; ok {
			ids = append(ids, v)
		}
	}
	if err := r.load(ids); err != nil {
		return false, err
	}
	auth := []*pdu.PDU{}
	for _, e := range ids {
		if ae := r.event(e); ae != nil {
			auth = append(auth, ae)
		}
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
	return eventauth.Authorize(r.rv, p, auth, getEvents, noKeys) == nil, nil
}
