package e2e

import (
	"context"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

func TestProfile(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")

		// Registration stores the localpart as the display name.
		prof, err := bob.GetProfile(ctx, alice.UserID)
		if err != nil || prof.DisplayName != "alice" || !prof.AvatarURL.IsEmpty() {
			t.Fatalf("initial profile: %+v %v", prof, err)
		}
		if err := alice.SetDisplayName(ctx, "Alice Liddell"); err != nil {
			t.Fatal(err)
		}
		avatar := id.ContentURI{Homeserver: "cirrus.test", FileID: "abcDEF123"}
		if err := alice.SetAvatarURL(ctx, avatar); err != nil {
			t.Fatal(err)
		}
		if dn, err := bob.GetDisplayName(ctx, alice.UserID); err != nil || dn.DisplayName != "Alice Liddell" {
			t.Fatalf("displayname: %+v %v", dn, err)
		}
		if u, err := bob.GetAvatarURL(ctx, alice.UserID); err != nil || u != avatar {
			t.Fatalf("avatar: %v %v", u, err)
		}
		// Profiles can be read without a token.
		st, body, _ := do(t, env, "GET", "/_matrix/client/v3/profile/@alice:cirrus.test/displayname", "", "")
		if st != 200 || body["displayname"] != "Alice Liddell" || len(body) != 1 {
			t.Fatalf("unauthenticated field read: %d %v", st, body)
		}

		// Extended fields: m.tz and custom keys of any JSON type.
		if err := alice.SetProfileField(ctx, "m.tz", "Europe/London"); err != nil {
			t.Fatal(err)
		}
		if err := alice.SetProfileField(ctx, "org.example.job", map[string]any{"title": "explorer", "years": 7}); err != nil {
			t.Fatal(err)
		}
		if err := alice.SetProfileField(ctx, "org.example.nothing", nil); err != nil {
			t.Fatalf("null custom value: %v", err)
		}
		st, body, _ = do(t, env, "GET", "/_matrix/client/v3/profile/@alice:cirrus.test", "", "")
		job, _ := body["org.example.job"].(map[string]any)
		if v, present := body["org.example.nothing"]; st != 200 || body["m.tz"] != "Europe/London" || job["title"] != "explorer" ||
			body["avatar_url"] != avatar.String() || !present || v != nil {
			t.Fatalf("full profile: %d %v", st, body)
		}
		var tz struct {
			TZ string `json:"m.tz"`
		}
		if err := bob.GetProfileField(ctx, alice.UserID, "m.tz", &tz); err != nil || tz.TZ != "Europe/London" {
			t.Fatalf("m.tz: %+v %v", tz, err)
		}

		// Delete a field; deleting a missing one is fine too.
		if err := alice.DeleteProfileField(ctx, "org.example.job"); err != nil {
			t.Fatal(err)
		}
		if err := alice.DeleteProfileField(ctx, "org.example.job"); err != nil {
			t.Fatalf("deleting a missing field: %v", err)
		}
		if st, body, _ := do(t, env, "GET", "/_matrix/client/v3/profile/@alice:cirrus.test/org.example.job", "", ""); st != 404 || body["errcode"] != "M_NOT_FOUND" {
			t.Fatalf("deleted field: %d %v", st, body)
		}
		// An empty display name or avatar clears it.
		if st, _, _ := do(t, env, "PUT", "/_matrix/client/v3/profile/@alice:cirrus.test/avatar_url", alice.AccessToken, `{"avatar_url":""}`); st != 200 {
			t.Fatalf("clear avatar: %d", st)
		}
		if st, _, _ := do(t, env, "GET", "/_matrix/client/v3/profile/@alice:cirrus.test/avatar_url", "", ""); st != 404 {
			t.Fatalf("cleared avatar still there: %d", st)
		}

		// Only the owner may change a profile.
		if st, body, _ := do(t, env, "PUT", "/_matrix/client/v3/profile/@alice:cirrus.test/displayname", bob.AccessToken, `{"displayname":"Mallory"}`); st != 403 || body["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("bob sets alice's name: %d %v", st, body)
		}
		if st, body, _ := do(t, env, "DELETE", "/_matrix/client/v3/profile/@alice:cirrus.test/m.tz", bob.AccessToken, ""); st != 403 || body["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("bob deletes alice's field: %d %v", st, body)
		}

		// The 64 KiB limit is on the whole profile.
		half := `{"org.example.a":"` + repeat("x", 40*1024) + `"}`
		if st, body, _ := do(t, env, "PUT", "/_matrix/client/v3/profile/@alice:cirrus.test/org.example.a", alice.AccessToken, half); st != 200 {
			t.Fatalf("40 KiB field: %d %v", st, body)
		}
		other := `{"org.example.b":"` + repeat("y", 40*1024) + `"}`
		if st, body, _ := do(t, env, "PUT", "/_matrix/client/v3/profile/@alice:cirrus.test/org.example.b", alice.AccessToken, other); st != 400 || body["errcode"] != "M_PROFILE_TOO_LARGE" {
			t.Fatalf("over 64 KiB: %d %v", st, body)
		}

		caps, err := alice.Capabilities(ctx)
		if err != nil || caps.SetDisplayname == nil || !caps.SetDisplayname.Enabled || caps.SetAvatarURL == nil || !caps.SetAvatarURL.Enabled {
			t.Fatalf("profile capabilities: %+v %v", caps, err)
		}
		st, body, _ = do(t, env, "GET", "/_matrix/client/v3/capabilities", alice.AccessToken, "")
		pf, _ := body["capabilities"].(map[string]any)["m.profile_fields"].(map[string]any)
		if st != 200 || pf["enabled"] != true {
			t.Fatalf("m.profile_fields: %v", body)
		}
	})
}

func TestProfileBadInput(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		alice := register(t, env, "alice", "pw")
		tok := alice.AccessToken
		const me = "/_matrix/client/v3/profile/@alice:cirrus.test"
		longKey := "org.example." + repeat("k", 250)
		runBadInput(t, env, []badInput{
			{"unknown user", "GET", "/_matrix/client/v3/profile/@nobody:cirrus.test", "", "", 404, "M_NOT_FOUND"},
			{"unknown user field", "GET", "/_matrix/client/v3/profile/@nobody:cirrus.test/displayname", "", "", 404, "M_NOT_FOUND"},
			{"remote user", "GET", "/_matrix/client/v3/profile/@alice:elsewhere.test", "", "", 404, "M_NOT_FOUND"},
			{"not a user id", "GET", "/_matrix/client/v3/profile/alice", "", "", 400, "M_INVALID_PARAM"},
			{"not a user id field", "GET", "/_matrix/client/v3/profile/!room:cirrus.test/displayname", "", "", 400, "M_INVALID_PARAM"},
			{"missing field", "GET", me + "/org.example.unset", "", "", 404, "M_NOT_FOUND"},
			{"bad key", "GET", me + "/Not.Valid", "", "", 400, "M_INVALID_PARAM"},
			{"unnamespaced key", "GET", me + "/pronouns", "", "", 400, "M_INVALID_PARAM"},
			{"key too long", "PUT", me + "/" + longKey, tok, `{"` + longKey + `":1}`, 400, "M_KEY_TOO_LARGE"},
			{"set without token", "PUT", me + "/displayname", "", `{"displayname":"x"}`, 401, "M_MISSING_TOKEN"},
			{"delete without token", "DELETE", me + "/displayname", "", "", 401, "M_MISSING_TOKEN"},
			{"set not json", "PUT", me + "/displayname", tok, "x", 400, "M_NOT_JSON"},
			{"set empty body", "PUT", me + "/displayname", tok, "", 400, "M_NOT_JSON"},
			{"set array", "PUT", me + "/displayname", tok, `["x"]`, 400, "M_NOT_JSON"},
			{"set missing property", "PUT", me + "/displayname", tok, `{"avatar_url":"mxc://a/b"}`, 400, "M_MISSING_PARAM"},
			{"displayname not a string", "PUT", me + "/displayname", tok, `{"displayname":5}`, 400, "M_INVALID_PARAM"},
			{"displayname null", "PUT", me + "/displayname", tok, `{"displayname":null}`, 400, "M_INVALID_PARAM"},
			{"displayname too long", "PUT", me + "/displayname", tok, `{"displayname":"` + repeat("n", 300) + `"}`, 400, "M_INVALID_PARAM"},
			{"avatar not mxc", "PUT", me + "/avatar_url", tok, `{"avatar_url":"https://example.org/a.png"}`, 400, "M_INVALID_PARAM"},
			{"avatar no media id", "PUT", me + "/avatar_url", tok, `{"avatar_url":"mxc://cirrus.test/"}`, 400, "M_INVALID_PARAM"},
			{"avatar not a string", "PUT", me + "/avatar_url", tok, `{"avatar_url":{}}`, 400, "M_INVALID_PARAM"},
			{"tz not a string", "PUT", me + "/m.tz", tok, `{"m.tz":1}`, 400, "M_INVALID_PARAM"},
			{"other user's profile", "PUT", "/_matrix/client/v3/profile/@bob:cirrus.test/displayname", tok, `{"displayname":"x"}`, 403, "M_FORBIDDEN"},
			{"remote user's profile", "PUT", "/_matrix/client/v3/profile/@alice:elsewhere.test/displayname", tok, `{"displayname":"x"}`, 403, "M_FORBIDDEN"},
			{"delete bad key", "DELETE", me + "/BAD", tok, "", 400, "M_INVALID_PARAM"},
		})
	})
}

func TestGuestProfile(t *testing.T) {
	env := testenv.Start(t, "embedded", map[string]string{"CIRRUS_GUEST_ACCESS": "true"})
	st, body, _ := do(t, env, "POST", "/_matrix/client/v3/register?kind=guest", "", `{}`)
	tok, _ := body["access_token"].(string)
	user, _ := body["user_id"].(string)
	if st != 200 || tok == "" {
		t.Fatalf("guest: %d %v", st, body)
	}
	if st, body, _ := do(t, env, "PUT", "/_matrix/client/v3/profile/"+user+"/displayname", tok, `{"displayname":"Visitor"}`); st != 200 {
		t.Fatalf("guest display name: %d %v", st, body)
	}
	runBadInput(t, env, []badInput{
		{"guest avatar", "PUT", "/_matrix/client/v3/profile/" + user + "/avatar_url", tok, `{"avatar_url":"mxc://a/b"}`, 403, "M_GUEST_ACCESS_FORBIDDEN"},
		{"guest password", "POST", "/_matrix/client/v3/account/password", tok, `{"new_password":"x"}`, 403, "M_GUEST_ACCESS_FORBIDDEN"},
		{"guest deactivate", "POST", "/_matrix/client/v3/account/deactivate", tok, `{}`, 403, "M_GUEST_ACCESS_FORBIDDEN"},
		{"guest get_token", "POST", "/_matrix/client/v1/login/get_token", tok, `{}`, 403, "M_GUEST_ACCESS_FORBIDDEN"},
		{"guest delete device", "DELETE", "/_matrix/client/v3/devices/X", tok, `{}`, 403, "M_GUEST_ACCESS_FORBIDDEN"},
	})
	st, body, _ = do(t, env, "GET", "/_matrix/client/v3/capabilities", tok, "")
	caps, _ := body["capabilities"].(map[string]any)
	if st != 200 || caps["m.change_password"].(map[string]any)["enabled"] != false || caps["m.get_login_token"].(map[string]any)["enabled"] != false {
		t.Fatalf("guest capabilities: %v", body)
	}
}
