package slidingsync

import (
	"context"
	"encoding/json"
	"sort"
	"strconv"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/clientsync"
	"github.com/cirrus-matrix/cirrus/core/ephemeral"
	"github.com/cirrus-matrix/cirrus/core/userdata"
)

// extData is what the extensions of one response carry.
type extData struct {
	toDevice    bool
	e2ee        bool
	dlChanged   []id.UserID
	dlLeft      []id.UserID
	adOn        bool
	adGlobal    []json.RawMessage
	adRooms     map[id.RoomID][]json.RawMessage
	receiptsOn  bool
	receipts    map[id.RoomID]json.RawMessage
	typingOn    bool
	typing      map[id.RoomID]json.RawMessage
	toDeviceMsg []json.RawMessage
}

// empty reports whether the extensions carry nothing new.
func (e *extData) empty() bool {
	return len(e.toDeviceMsg) == 0 && len(e.dlChanged) == 0 && len(e.dlLeft) == 0 && len(e.adGlobal) == 0 &&
		len(e.adRooms) == 0 && len(e.receipts) == 0 && len(e.typing) == 0
}

// extRooms is the rooms an extension covers: those of the lists and the
// subscriptions it names, "*" meaning all of them; an omitted lists or
// rooms means "*" (as Synapse defaults them).
func extRooms(cfg *ExtConfig, p *plan) map[id.RoomID]bool {
	out := map[id.RoomID]bool{}
	lists, rooms := []string{Wildcard}, []string{Wildcard}
	if cfg.Lists != nil {
		lists = *cfg.Lists
	}
	if cfg.Rooms != nil {
		rooms = *cfg.Rooms
	}
	names := map[string]bool{}
	for _, l := range lists {
		names[l] = true
	}
	for room, ls := range p.relevant {
		for _, l := range ls {
			if names[l] || names[Wildcard] {
				out[room] = true
			}
		}
	}
	for _, rm := range rooms {
		if rm == Wildcard {
			for room := range p.subs {
				out[room] = true
			}
		} else if p.subs[id.RoomID(rm)] {
			out[id.RoomID(rm)] = true
		}
	}
	return out
}

// extensions gathers the extensions' data for a plan.
func (r *run) extensions(ctx context.Context, p *plan) (*extData, error) {
	ex := &r.c.Req.Extensions
	e := &extData{}
	initialRooms := map[id.RoomID]bool{}
	for _, sr := range p.send {
		if sr.initial && sr.rs.M == "join" {
			initialRooms[sr.id] = true
		}
	}
	if r.toDeviceOn() {
		e.toDevice = true
		for _, m := range r.toDevice {
			b, _ := json.Marshal(m)
			e.toDeviceMsg = append(e.toDeviceMsg, b)
		}
	}
	if on(ex.E2EE) && r.s.Sync.DeviceLists != nil {
		e.e2ee = true
		e.dlChanged, e.dlLeft = sortedUsers(r.dlChanged), sortedUsers(r.dlLeft)
	}
	if on(ex.AccountData) {
		e.adOn = true
		covered := extRooms(ex.AccountData, p)
		var ads []userdata.AccountData
		var err error
		if !r.incremental {
			if ads, err = r.s.UserData.All(ctx, r.me); err != nil {
				return nil, err
			}
			if d := r.s.Sync.DefaultAccountData; d != nil {
				have := map[string]bool{}
				for _, ad := range ads {
					if ad.RoomID == "" {
						have[ad.Type] = true
					}
				}
				for _, def := range d(r.me) {
					if !have[def.Type] {
						ads = append(ads, def)
					}
				}
			}
		} else {
			var refs []userdata.AccountDataRef
			for _, ref := range r.adRefs {
				if ref.RoomID == "" || covered[ref.RoomID] {
					refs = append(refs, ref)
				}
			}
			if len(refs) > 0 {
				if ads, err = r.s.UserData.GetMany(ctx, r.me, refs); err != nil {
					return nil, err
				}
			}
			// Rooms sent for the first time get their account data too.
			if len(initialRooms) > 0 {
				all, err := r.s.UserData.All(ctx, r.me)
				if err != nil {
					return nil, err
				}
				for _, ad := range all {
					if ad.RoomID != "" && initialRooms[ad.RoomID] && !hasRef(refs, ad.AccountDataRef) {
						ads = append(ads, ad)
					}
				}
			}
		}
		e.adRooms = map[id.RoomID][]json.RawMessage{}
		for _, ad := range ads {
			b, _ := json.Marshal(struct {
				Type    string          `json:"type"`
				Content json.RawMessage `json:"content"`
			}{ad.Type, ad.Content})
			if ad.RoomID == "" {
				e.adGlobal = append(e.adGlobal, b)
			} else if covered[ad.RoomID] {
				e.adRooms[ad.RoomID] = append(e.adRooms[ad.RoomID], b)
			}
		}
		if len(e.adRooms) == 0 {
			e.adRooms = nil
		}
	}
	if on(ex.Receipts) {
		e.receiptsOn = true
		covered := extRooms(ex.Receipts, p)
		byRoom := map[id.RoomID][]ephemeral.Receipt{}
		for _, rc := range r.receipts {
			if covered[rc.RoomID] && !initialRooms[rc.RoomID] {
				byRoom[rc.RoomID] = append(byRoom[rc.RoomID], rc)
			}
		}
		for room := range initialRooms {
			if !covered[room] {
				continue
			}
			all, err := r.s.Ephemeral.RoomReceipts(ctx, room)
			if err != nil {
				return nil, err
			}
			for _, rc := range all {
				if !rc.Private() || rc.UserID == r.me {
					byRoom[room] = append(byRoom[room], rc)
				}
			}
		}
		e.receipts = map[id.RoomID]json.RawMessage{}
		for room, rcs := range byRoom {
			if len(rcs) == 0 {
				continue
			}
			b, _ := json.Marshal(map[string]any{"type": "m.receipt", "content": ephemeral.ReceiptContent(rcs)})
			e.receipts[room] = b
		}
		if len(e.receipts) == 0 {
			e.receipts = nil
		}
	}
	if on(ex.Typing) {
		e.typingOn = true
		covered := extRooms(ex.Typing, p)
		want := map[id.RoomID]bool{}
		for room := range r.typingRooms {
			if covered[room] {
				want[room] = true
			}
		}
		e.typing = map[id.RoomID]json.RawMessage{}
		for room := range initialRooms {
			if covered[room] {
				want[room] = true
			}
		}
		for room := range want {
			users, err := r.s.Ephemeral.TypingUsers(ctx, room)
			if err != nil {
				return nil, err
			}
			if len(users) == 0 && !r.typingRooms[room] {
				continue // nobody typing in a room sent for the first time
			}
			if users == nil {
				users = []id.UserID{}
			}
			b, _ := json.Marshal(map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": users}})
			e.typing[room] = b
		}
		if len(e.typing) == 0 {
			e.typing = nil
		}
	}
	return e, nil
}

func hasRef(refs []userdata.AccountDataRef, ref userdata.AccountDataRef) bool {
	for _, r := range refs {
		if r == ref {
			return true
		}
	}
	return false
}

// addExtensions puts the extensions into the response.
func (r *run) addExtensions(ctx context.Context, p *plan, resp *Response) error {
	e := p.ext
	if e == nil {
		return nil
	}
	if e.toDevice {
		evs := e.toDeviceMsg
		if evs == nil {
			evs = []json.RawMessage{}
		}
		resp.Extensions["to_device"] = map[string]any{"next_batch": strconv.FormatInt(r.tdNext, 10), "events": evs}
	}
	if e.e2ee {
		out := map[string]any{}
		if len(e.dlChanged) > 0 || len(e.dlLeft) > 0 {
			out["device_lists"] = map[string]any{"changed": nonNil(e.dlChanged), "left": nonNil(e.dlLeft)}
		}
		src := r.s.Sync.DeviceLists
		if counts, err := src.OneTimeKeyCounts(ctx, r.me, r.c.Device); err == nil {
			out["device_one_time_keys_count"] = counts
		} else {
			r.s.log().Warn("sliding sync: one-time key counts", "err", err)
		}
		if types, err := src.UnusedFallbackKeyTypes(ctx, r.me, r.c.Device); err == nil {
			if types == nil {
				types = []string{}
			}
			out["device_unused_fallback_key_types"] = types
		} else {
			r.s.log().Warn("sliding sync: fallback key types", "err", err)
		}
		resp.Extensions["e2ee"] = out
	}
	if e.adOn {
		global := e.adGlobal
		if global == nil {
			global = []json.RawMessage{}
		}
		out := map[string]any{"global": global}
		if e.adRooms != nil {
			out["rooms"] = e.adRooms
		}
		resp.Extensions["account_data"] = out
	}
	if e.receiptsOn {
		rooms := e.receipts
		if rooms == nil {
			rooms = map[id.RoomID]json.RawMessage{}
		}
		resp.Extensions["receipts"] = map[string]any{"rooms": rooms}
	}
	if e.typingOn {
		rooms := e.typing
		if rooms == nil {
			rooms = map[id.RoomID]json.RawMessage{}
		}
		resp.Extensions["typing"] = map[string]any{"rooms": rooms}
	}
	return nil
}

func nonNil(us []id.UserID) []id.UserID {
	if us == nil {
		return []id.UserID{}
	}
	return us
}

func sortedUsers(m map[id.UserID]bool) []id.UserID {
	out := make([]id.UserID, 0, len(m))
	for u := range m {
		out = append(out, u)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

var _ = clientsync.Token{}
