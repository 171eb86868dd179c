package push

import (
	"encoding/json"
	"strings"

	"maunium.net/go/mautrix/id"
)

// defaultRules are the spec's server-default rules (client-server API,
// "Predefined Rules"), in priority order within each kind. The legacy
// .m.rule.contains_display_name, .m.rule.roomnotif and
// .m.rule.contains_user_name are kept for clients that still send events
// without m.mentions; evaluation skips them for events that have it.
// USER_ID and LOCALPART are replaced with the owner's values.
const defaultRules = `{
"override": [
 {"rule_id": ".m.rule.master", "default": true, "enabled": false, "conditions": [], "actions": []},
 {"rule_id": ".m.rule.suppress_notices", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "content.msgtype", "pattern": "m.notice"}], "actions": []},
 {"rule_id": ".m.rule.invite_for_me", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.member"},
   {"kind": "event_match", "key": "content.membership", "pattern": "invite"},
   {"kind": "event_match", "key": "state_key", "pattern": "USER_ID"}],
  "actions": ["notify", {"set_tweak": "sound", "value": "default"}]},
 {"rule_id": ".m.rule.member_event", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.member"}], "actions": []},
 {"rule_id": ".m.rule.is_user_mention", "default": true, "enabled": true,
  "conditions": [{"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": "USER_ID"}],
  "actions": ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]},
 {"rule_id": ".m.rule.contains_display_name", "default": true, "enabled": true,
  "conditions": [{"kind": "contains_display_name"}],
  "actions": ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]},
 {"rule_id": ".m.rule.is_room_mention", "default": true, "enabled": true,
  "conditions": [{"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": true},
   {"kind": "sender_notification_permission", "key": "room"}],
  "actions": ["notify", {"set_tweak": "highlight"}]},
 {"rule_id": ".m.rule.roomnotif", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "content.body", "pattern": "@room"},
   {"kind": "sender_notification_permission", "key": "room"}],
  "actions": ["notify", {"set_tweak": "highlight"}]},
 {"rule_id": ".m.rule.tombstone", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.tombstone"},
   {"kind": "event_match", "key": "state_key", "pattern": ""}],
  "actions": ["notify", {"set_tweak": "highlight"}]},
 {"rule_id": ".m.rule.reaction", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.reaction"}], "actions": []},
 {"rule_id": ".m.rule.room.server_acl", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.server_acl"},
   {"kind": "event_match", "key": "state_key", "pattern": ""}], "actions": []},
 {"rule_id": ".m.rule.suppress_edits", "default": true, "enabled": true,
  "conditions": [{"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace"}], "actions": []}
],
"content": [
 {"rule_id": ".m.rule.contains_user_name", "default": true, "enabled": true, "pattern": "LOCALPART",
  "actions": ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]}
],
"room": [],
"sender": [],
"underride": [
 {"rule_id": ".m.rule.call", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.call.invite"}],
  "actions": ["notify", {"set_tweak": "sound", "value": "ring"}]},
 {"rule_id": ".m.rule.encrypted_room_one_to_one", "default": true, "enabled": true,
  "conditions": [{"kind": "room_member_count", "is": "2"}, {"kind": "event_match", "key": "type", "pattern": "m.room.encrypted"}],
  "actions": ["notify", {"set_tweak": "sound", "value": "default"}]},
 {"rule_id": ".m.rule.room_one_to_one", "default": true, "enabled": true,
  "conditions": [{"kind": "room_member_count", "is": "2"}, {"kind": "event_match", "key": "type", "pattern": "m.room.message"}],
  "actions": ["notify", {"set_tweak": "sound", "value": "default"}]},
 {"rule_id": ".m.rule.message", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.message"}], "actions": ["notify"]},
 {"rule_id": ".m.rule.encrypted", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.encrypted"}], "actions": ["notify"]}
]
}`

// Defaults returns the server-default ruleset of user u (a fresh copy).
func Defaults(u id.UserID) Ruleset {
	local, _, _ := u.Parse()
	// Both values are JSON-escaped before they go into the template.
	uid, _ := json.Marshal(string(u))
	lp, _ := json.Marshal(local)
	text := strings.NewReplacer(`"USER_ID"`, string(uid), `"LOCALPART"`, string(lp)).Replace(defaultRules)
	var rs Ruleset
	if err := json.Unmarshal([]byte(text), &rs); err != nil {
		panic("push: bad default rules: " + err.Error())
	}
	return rs
}
