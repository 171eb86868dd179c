package appservice

import (
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"
)

const ircYAML = `id: "IRC Bridge"
url: "http://127.0.0.1:1234"
as_token: "30c05ae90a248a4188e620216fa72e349803310ec83e2a77b34fe90be6081f46"
hs_token: "312df522183efd404ec1cd22d2ffa4bbc76a8c1ccf541dd692eef281356bb74e"
sender_localpart: "_irc_bot"
rate_limited: false
protocols: ["irc"]
namespaces:
  users:
    - exclusive: true
      regex: "@_irc_bridge_.*"
  aliases:
    - exclusive: false
      regex: "#_irc_bridge_.*"
  rooms: []
`

func mustRegistry(t *testing.T, yaml string) *Registry {
	t.Helper()
	regs, err := Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	g, err := NewRegistry("example.org", regs)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestParseSpecExample(t *testing.T) {
	g := mustRegistry(t, ircYAML)
	r := g.ByID("IRC Bridge")
	if r == nil || g.ByToken(r.ASToken) != r {
		t.Fatalf("registry lookups: %+v", g.All())
	}
	if r.Sender() != "@_irc_bot:example.org" || r.BaseURL() != "http://127.0.0.1:1234" || r.Limited() || !r.HasProtocol("irc") {
		t.Errorf("fields: sender %s url %s limited %v", r.Sender(), r.BaseURL(), r.Limited())
	}
	for _, c := range []struct {
		user      id.UserID
		owns, exc bool
	}{
		{"@_irc_bridge_alice:example.org", true, true},
		{"@_irc_bot:example.org", true, false},
		{"@alice:example.org", false, false},
		{"@x_irc_bridge_alice:example.org", false, false}, // regexes match whole ids
	} {
		if r.OwnsUser(c.user) != c.owns || r.UserExclusive(c.user) != c.exc {
			t.Errorf("%s: owns %v exclusive %v", c.user, r.OwnsUser(c.user), r.UserExclusive(c.user))
		}
	}
	if !r.MatchesAlias("#_irc_bridge_chan:example.org") || r.AliasExclusive("#_irc_bridge_chan:example.org") {
		t.Error("alias namespace")
	}
	if g.ExclusiveUser("@_irc_bridge_bob:example.org") != r || g.ExclusiveUser("@bob:example.org") != nil {
		t.Error("ExclusiveUser")
	}
	if g.ExclusiveUser(r.Sender()) != r {
		t.Error("the sender is reserved too")
	}
}

func TestParseSeveralAndNullURL(t *testing.T) {
	g := mustRegistry(t, ircYAML+"---\nid: bot\nurl: null\nas_token: a2\nhs_token: h2\nsender_localpart: bot\nnamespaces: {}\n")
	if len(g.All()) != 2 {
		t.Fatalf("got %d registrations", len(g.All()))
	}
	if b := g.ByID("bot"); b.BaseURL() != "" || !b.Limited() {
		t.Errorf("bot: url %q limited %v", b.BaseURL(), b.Limited())
	}
}

func TestRegistryRejects(t *testing.T) {
	base := func(id, as, hs string) string {
		return "id: " + id + "\nurl: http://localhost:9\nas_token: " + as + "\nhs_token: " + hs + "\nsender_localpart: bot" + id + "\nnamespaces: {}\n"
	}
	for _, c := range []struct {
		name, yaml, want string
	}{
		{"duplicate id", base("a", "t1", "h1") + "---\n" + base("a", "t2", "h2"), "id used twice"},
		{"duplicate as_token", base("a", "t1", "h1") + "---\n" + base("b", "t1", "h2"), "as_token"},
		{"duplicate hs_token", base("a", "t1", "h1") + "---\n" + base("b", "t2", "h1"), "hs_token"},
		{"same tokens", base("a", "t1", "t1"), "must differ"},
		{"bad regex", "id: a\nurl: null\nas_token: t\nhs_token: h\nsender_localpart: b\nnamespaces:\n  users:\n    - exclusive: true\n      regex: \"@_(\"\n", "namespaces.users[0]"},
		{"missing url", "id: a\nas_token: t\nhs_token: h\nsender_localpart: b\nnamespaces: {}\n", "url is required"},
		{"bad url", "id: a\nurl: ftp://x\nas_token: t\nhs_token: h\nsender_localpart: b\nnamespaces: {}\n", "http(s) URL"},
		{"no sender", "id: a\nurl: null\nas_token: t\nhs_token: h\nnamespaces: {}\n", "sender_localpart"},
		{"bad sender", "id: a\nurl: null\nas_token: t\nhs_token: h\nsender_localpart: \"Bad Bot\"\nnamespaces: {}\n", "sender_localpart"},
		{"no id", "url: null\nas_token: t\nhs_token: h\nsender_localpart: b\nnamespaces: {}\n", "id is required"},
		{"not yaml", "id: [", "YAML"},
	} {
		t.Run(c.name, func(t *testing.T) {
			regs, err := Parse([]byte(c.yaml))
			if err == nil {
				_, err = NewRegistry("example.org", regs)
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want one mentioning %q", err, c.want)
			}
		})
	}
}
