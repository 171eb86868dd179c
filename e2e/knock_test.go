package e2e

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

func joinRules(rule string, allow ...id.RoomID) *event.Event {
	c := map[string]any{"join_rule": rule}
	if len(allow) > 0 {
		var list []map[string]any
		for _, r := range allow {
			list = append(list, map[string]any{"type": "m.room_membership", "room_id": r})
		}
		c["allow"] = list
	}
	return &event.Event{Type: event.StateJoinRules, Content: event.Content{Raw: c}}
}

func TestKnock(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		carol := register(t, env, "carol", "pw")
		for _, v := range []id.RoomVersion{"7", "12"} {
			t.Run("v"+string(v), func(t *testing.T) {
				room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomVersion: v, Preset: "private_chat",
					InitialState: []*event.Event{joinRules("knock")}})
				if err != nil {
					t.Fatal(err)
				}
				r := room.RoomID
				if _, err := bob.JoinRoomByID(ctx, r); errcode(err) != "M_FORBIDDEN" {
					t.Fatalf("join without invite: %v", err)
				}
				if _, err := bob.KnockRoom(ctx, string(r), &mautrix.ReqKnockRoom{Reason: "let me in"}); err != nil {
					t.Fatalf("knock: %v", err)
				}
				knock := stateContent(t, alice, r, event.StateMember, string(bob.UserID))
				if knock["membership"] != "knock" || knock["reason"] != "let me in" {
					t.Fatalf("knock event %v", knock)
				}
				if _, err := bob.SendText(ctx, r, "hello?"); errcode(err) != "M_FORBIDDEN" {
					t.Fatalf("knocker sends: %v", err)
				}
				if _, err := alice.InviteUser(ctx, r, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
					t.Fatalf("invite the knocker: %v", err)
				}
				if _, err := bob.JoinRoomByID(ctx, r); err != nil {
					t.Fatalf("accept: %v", err)
				}
				if _, err := bob.SendText(ctx, r, "thanks"); err != nil {
					t.Fatal(err)
				}
				// A knock can be turned down (kick) or withdrawn (leave).
				if _, err := carol.KnockRoom(ctx, string(r), nil); err != nil {
					t.Fatal(err)
				}
				if _, err := alice.KickUser(ctx, r, &mautrix.ReqKickUser{UserID: carol.UserID, Reason: "no"}); err != nil {
					t.Fatalf("deny the knock: %v", err)
				}
				if m := membership(t, alice, r, carol.UserID); m != "leave" {
					t.Fatalf("carol after the denial: %q", m)
				}
				if _, err := carol.KnockRoom(ctx, string(r), nil); err != nil {
					t.Fatal(err)
				}
				if _, err := carol.LeaveRoom(ctx, r); err != nil {
					t.Fatalf("withdraw the knock: %v", err)
				}
				// A banned user cannot knock.
				if _, err := alice.BanUser(ctx, r, &mautrix.ReqBanUser{UserID: carol.UserID}); err != nil {
					t.Fatal(err)
				}
				if _, err := carol.KnockRoom(ctx, string(r), nil); errcode(err) != "M_FORBIDDEN" {
					t.Fatalf("banned knock: %v", err)
				}
			})
		}
		// Rooms whose join rule is not knock, and versions without knocking.
		invite, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.KnockRoom(ctx, string(invite.RoomID), nil); errcode(err) != "M_FORBIDDEN" {
			t.Fatalf("knock on an invite-only room: %v", err)
		}
		old, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomVersion: "6", Preset: "private_chat", InitialState: []*event.Event{joinRules("knock")}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.KnockRoom(ctx, string(old.RoomID), nil); errcode(err) != "M_FORBIDDEN" {
			t.Fatalf("knock in v6: %v", err)
		}
		// Knocking through an alias.
		aliased, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomAliasName: "door", InitialState: []*event.Event{joinRules("knock")}})
		if err != nil {
			t.Fatal(err)
		}
		if resp, err := bob.KnockRoom(ctx, "#door:cirrus.test", nil); err != nil || resp.RoomID != aliased.RoomID {
			t.Fatalf("knock by alias: %+v %v", resp, err)
		}
	})
}

func TestRestrictedJoin(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		carol := register(t, env, "carol", "pw")
		// The space whose members may join.
		space, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", CreationContent: map[string]any{"type": "m.space"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.InviteUser(ctx, space.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, space.RoomID); err != nil {
			t.Fatal(err)
		}
		for _, v := range []id.RoomVersion{"8", "10", "12"} {
			t.Run("v"+string(v), func(t *testing.T) {
				room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomVersion: v, Preset: "private_chat",
					InitialState: []*event.Event{joinRules("restricted", space.RoomID)}})
				if err != nil {
					t.Fatal(err)
				}
				r := room.RoomID
				if _, err := carol.JoinRoomByID(ctx, r); errcode(err) != "M_FORBIDDEN" {
					t.Fatalf("join without qualifying membership: %v", err)
				}
				if _, err := bob.JoinRoomByID(ctx, r); err != nil {
					t.Fatalf("join through the space: %v", err)
				}
				m := stateContent(t, alice, r, event.StateMember, string(bob.UserID))
				if m["membership"] != "join" || m["join_authorised_via_users_server"] != string(alice.UserID) {
					t.Fatalf("restricted join event %v", m)
				}
				// Leaving and joining again works the same way.
				if _, err := bob.LeaveRoom(ctx, r); err != nil {
					t.Fatal(err)
				}
				if _, err := bob.JoinRoomByID(ctx, r); err != nil {
					t.Fatalf("second restricted join: %v", err)
				}
				// An invited user needs no qualifying membership.
				if _, err := alice.InviteUser(ctx, r, &mautrix.ReqInviteUser{UserID: carol.UserID}); err != nil {
					t.Fatal(err)
				}
				if _, err := carol.JoinRoomByID(ctx, r); err != nil {
					t.Fatalf("invited join: %v", err)
				}
				if _, err := carol.LeaveRoom(ctx, r); err != nil {
					t.Fatal(err)
				}
			})
		}
		// knock_restricted (v10+): members of the space join, others knock.
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomVersion: "10", Preset: "private_chat",
			InitialState: []*event.Event{joinRules("knock_restricted", space.RoomID)}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatalf("knock_restricted join through the space: %v", err)
		}
		if _, err := carol.JoinRoomByID(ctx, room.RoomID); errcode(err) != "M_FORBIDDEN" {
			t.Fatalf("knock_restricted join by an outsider: %v", err)
		}
		if _, err := carol.KnockRoom(ctx, string(room.RoomID), nil); err != nil {
			t.Fatalf("knock_restricted knock: %v", err)
		}
		// Restricted rules mean nothing before v8: the room stays invite-only.
		v7, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomVersion: "7", Preset: "private_chat",
			InitialState: []*event.Event{joinRules("restricted", space.RoomID)}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, v7.RoomID); errcode(err) != "M_FORBIDDEN" {
			t.Fatalf("restricted join in v7: %v", err)
		}
	})
}
