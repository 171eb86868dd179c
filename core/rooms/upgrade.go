package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"time"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// UpgradeRequest asks to replace a room by a new one of another version.
type UpgradeRequest struct {
	Room    id.RoomID
	User    id.UserID
	Version id.RoomVersion
	// AdditionalCreators become co-creators when the new version has them
	// (v12); they are never carried over from the old room (spec).
	AdditionalCreators []id.UserID
}

// upgradeLease keeps two upgrades of one room from running at once; it
// expires by itself if its holder dies half way.
const upgradeLease = 10 * time.Minute

func upgradeKey(r id.RoomID) table.Key { return table.Key{PK: roomPK(r), SK: "upgrade"} }

// transferredState are the state events an upgrade copies (spec "Room
// upgrades", server behaviour 3). Power levels are handled apart.
var transferredState = []string{
	"m.room.join_rules", "m.room.history_visibility", "m.room.guest_access",
	"m.room.name", "m.room.topic", "m.room.avatar", "m.room.encryption",
	"m.room.server_acl",
}

// UpgradeRoom follows the spec's steps: check that the user may send a
// tombstone; create the replacement (predecessor and room type in its create
// event); copy the transferable state, bans and, for a space, its children;
// invite the old room's local members unless anyone may join; move local
// aliases, the canonical alias and the directory entry; send the tombstone;
// and restrict the old room's power levels so it falls silent.
func (s *Service) UpgradeRoom(ctx context.Context, req UpgradeRequest) (id.RoomID, error) {
	nv := req.Version
	if !slices.Contains(SupportedVersions, nv) {
		return "", &httpapi.Error{Status: 400, Code: "M_UNSUPPORTED_ROOM_VERSION", Message: "this server does not support room version " + string(nv)}
	}
	old, u := req.Room, req.User
	h, err := s.getHead(ctx, old)
	if errors.Is(err, ErrNoRoom) {
		return "", httpapi.Forbidden("you are not in this room")
	} else if err != nil {
		return "", err
	}
	if m, err := s.Membership(ctx, old, u); err != nil {
		return "", err
	} else if m != "join" {
		return "", httpapi.Forbidden("you are not in this room")
	}
	oldPower, err := s.PowerLevels(ctx, old)
	if err != nil {
		return "", err
	}
	if oldPower.UserLevel(u) < oldPower.EventLevel("m.room.tombstone", true) {
		return "", httpapi.Forbidden("you do not have the power to upgrade this room")
	}
	lk := upgradeKey(old)
	lease, _ := json.Marshal(map[string]any{"user": u, "version": nv})
	if err := s.T.Put(ctx, table.Item{PK: lk.PK, SK: lk.SK, Data: lease, TTL: s.Now().Add(upgradeLease).Unix()}, table.IfNotExists()); err != nil {
		if errors.Is(err, table.ErrConditionFailed) {
			return "", httpapi.BadRequest("an upgrade of this room is already under way")
		}
		return "", err
	}
	defer func() { _ = s.T.Delete(context.WithoutCancel(ctx), lk, table.Cond{}) }()

	stateEvs, err := s.CurrentState(ctx, old, "")
	if err != nil {
		return "", err
	}
	state := map[pdu.StateKey]*Event{}
	for _, e := range stateEvs {
		state[pdu.StateKey{Type: e.Type, StateKey: *e.StateKey}] = e
	}
	get := func(typ string) *Event { return state[pdu.StateKey{Type: typ}] }

	// 2. The replacement room.
	cc := map[string]any{"room_version": nv}
	pred := map[string]any{"room_id": old}
	if len(h.Extremities) > 0 {
		pred["event_id"] = h.Extremities[0]
	}
	cc["predecessor"] = pred
	if c := get("m.room.create"); c != nil {
		var oc map[string]json.RawMessage
		_ = json.Unmarshal(c.Content, &oc)
		for _, k := range []string{"type", "m.federate"} {
			if v, ok := oc[k]; ok {
				cc[k] = v
			}
		}
	}
	if nv.CreatorInContent() {
		cc["creator"] = u
	}
	creators := []id.UserID{u}
	if nv.PrivilegedRoomCreators() {
		var extra []id.UserID
		for _, c := range req.AdditionalCreators {
			if c != u && !slices.Contains(extra, c) {
				extra = append(extra, c)
			}
		}
		if len(extra) > 0 {
			cc["additional_creators"] = extra
			creators = append(creators, extra...)
		}
	}
	empty := ""
	createEv := NewEvent{Type: "m.room.create", StateKey: &empty, Sender: u, Content: content(cc)}
	var newRoom id.RoomID
	if !nv.RoomIDIsCreateEventID() {
		newRoom = s.randomRoomID()
	}
	var created *Event
	for attempt := 0; attempt < 5; attempt++ {
		created, err = s.trySend(ctx, newRoom, createEv, &createSpec{roomID: newRoom, version: nv})
		if err != errRetry {
			break
		}
	}
	if err != nil {
		return "", err
	}
	newRoom = created.RoomID
	send := func(typ, skey string, c json.RawMessage) error {
		k := skey
		_, err := s.Send(ctx, newRoom, NewEvent{Type: typ, StateKey: &k, Sender: u, Content: c})
		return err
	}
	if _, err := s.setMember(ctx, newRoom, u, u, s.profileContent(ctx, u, "join")); err != nil {
		return "", err
	}

	// 3. Power levels: the old room's, fitted to the new version, with the
	// upgrading user raised (for now) to whatever the copying needs.
	var finalPL, workPL map[string]json.RawMessage
	if pl := get("m.room.power_levels"); pl != nil {
		finalPL = upgradedPowerLevels(pl.Content, h.RoomVersion, nv, creators, oldPower)
		workPL = finalPL
		if !nv.PrivilegedRoomCreators() {
			p := parsePower(nv, content(finalPL), nil, "")
			need := max(p.StateDefault, p.Ban, p.Invite, p.Kick, p.EventsDefault)
			for _, v := range p.Events {
				need = max(need, v)
			}
			if p.UserLevel(u) < need {
				workPL = maps.Clone(finalPL)
				users := map[string]json.RawMessage{}
				_ = json.Unmarshal(finalPL["users"], &users)
				users[string(u)] = content(need)
				workPL["users"] = content(users)
			}
		}
		if err := send("m.room.power_levels", "", content(workPL)); err != nil {
			return "", err
		}
	}
	joinRule := ""
	for _, typ := range transferredState {
		e := get(typ)
		if e == nil {
			continue
		}
		c := e.Content
		if typ == "m.room.join_rules" {
			c, joinRule = fitJoinRule(c, nv)
		}
		if err := send(typ, "", c); err != nil {
			return "", err
		}
	}
	if c := get("m.room.create"); c != nil && createType(c) == "m.space" {
		for _, e := range stateEvs {
			if e.Type == "m.space.child" && len(e.Content) > 2 {
				if err := send(e.Type, *e.StateKey, e.Content); err != nil {
					s.Log.Warn("upgrade: space child not copied", "room", old, "child", *e.StateKey, "err", err)
				}
			}
		}
	}
	for _, e := range stateEvs {
		if e.Type != "m.room.member" {
			continue
		}
		target := id.UserID(*e.StateKey)
		switch m := e.Membership(); {
		case m == "ban":
			if err := send("m.room.member", string(target), e.Content); err != nil {
				s.Log.Warn("upgrade: ban not copied", "room", old, "user", target, "err", err)
			}
		case (m == "join" || m == "invite") && target != u && joinRule != "public" && s.isLocal(target):
			// Without an invite, members of a private room could not follow
			// the tombstone.
			if err := s.Invite(ctx, newRoom, u, target, "", false); err != nil {
				s.Log.Warn("upgrade: member not invited", "room", newRoom, "user", target, "err", err)
			}
		}
	}
	if workPL != nil && !maps.EqualFunc(workPL, finalPL, func(a, b json.RawMessage) bool { return string(a) == string(b) }) {
		if err := send("m.room.power_levels", "", content(finalPL)); err != nil {
			return "", err
		}
	}

	// 4. Aliases and the directory entry move to the new room.
	aliases, err := s.RoomAliases(ctx, old)
	if err != nil {
		return "", err
	}
	for _, a := range aliases {
		ai, err := s.LookupAlias(ctx, a)
		if err == nil && ai.RoomID == old {
			err = s.repointAlias(ctx, ai, newRoom)
		}
		if err != nil {
			s.Log.Warn("upgrade: alias not moved", "alias", a, "err", err)
		}
	}
	if ca := get("m.room.canonical_alias"); ca != nil && len(ca.Content) > 2 {
		if err := send("m.room.canonical_alias", "", ca.Content); err != nil {
			s.Log.Warn("upgrade: canonical alias not copied", "room", newRoom, "err", err)
		} else if _, err := s.Send(ctx, old, NewEvent{Type: "m.room.canonical_alias", StateKey: &empty, Sender: u, Content: json.RawMessage(`{}`)}); err != nil {
			s.Log.Warn("upgrade: canonical alias not removed from the old room", "room", old, "err", err)
		}
	}
	if public, err := s.DirectoryVisibility(ctx, old); err == nil && public {
		if err := s.SetDirectoryVisibility(ctx, newRoom, true); err != nil {
			return "", err
		}
		if err := s.SetDirectoryVisibility(ctx, old, false); err != nil {
			return "", err
		}
	}

	// 5. The tombstone.
	tomb := content(map[string]any{"body": "This room has been replaced", "replacement_room": newRoom})
	if _, err := s.Send(ctx, old, NewEvent{Type: "m.room.tombstone", StateKey: &empty, Sender: u, Content: tomb}); err != nil {
		return "", err
	}

	// 6. Quieten the old room: sending and inviting need more than users_default.
	if pl := get("m.room.power_levels"); pl != nil {
		var c map[string]json.RawMessage
		if json.Unmarshal(pl.Content, &c) == nil {
			restricted := max(50, oldPower.UsersDefault+1)
			changed := false
			if oldPower.EventsDefault < restricted {
				c["events_default"], changed = content(restricted), true
			}
			if oldPower.Invite < restricted {
				c["invite"], changed = content(restricted), true
			}
			if changed {
				if _, err := s.Send(ctx, old, NewEvent{Type: "m.room.power_levels", StateKey: &empty, Sender: u, Content: content(c)}); err != nil {
					s.Log.Warn("upgrade: old room power levels not restricted", "room", old, "err", err)
				}
			}
		}
	}
	return newRoom, nil
}

// upgradedPowerLevels fits a power levels content to the new room: v12
// creators may not appear in users; leaving a v12 room, its creators (who had
// unlimited power) get 100 explicitly.
func upgradedPowerLevels(old json.RawMessage, ov, nv id.RoomVersion, creators []id.UserID, oldPower *Power) map[string]json.RawMessage {
	c := map[string]json.RawMessage{}
	_ = json.Unmarshal(old, &c)
	users := map[string]json.RawMessage{}
	_ = json.Unmarshal(c["users"], &users)
	if ov.PrivilegedRoomCreators() && !nv.PrivilegedRoomCreators() {
		for _, cr := range oldPower.Creators {
			users[string(cr)] = content(100)
		}
		users[string(creators[0])] = content(100)
	}
	if nv.PrivilegedRoomCreators() {
		for _, cr := range creators {
			delete(users, string(cr))
		}
	}
	c["users"] = content(users)
	return c
}

// fitJoinRule turns a join rule the new version lacks into "invite".
func fitJoinRule(c json.RawMessage, nv id.RoomVersion) (json.RawMessage, string) {
	var jr struct {
		JoinRule string `json:"join_rule"`
	}
	_ = json.Unmarshal(c, &jr)
	ok := true
	switch jr.JoinRule {
	case "knock":
		ok = nv.Knocks()
	case "restricted":
		ok = nv.RestrictedJoins()
	case "knock_restricted":
		ok = nv.KnockRestricted()
	}
	if !ok {
		return content(map[string]string{"join_rule": "invite"}), "invite"
	}
	return c, jr.JoinRule
}

func createType(create *Event) string {
	var c struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(create.Content, &c)
	return c.Type
}
