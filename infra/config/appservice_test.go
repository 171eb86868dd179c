package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadAppServices(t *testing.T) {
	dir := t.TempDir()
	reg := func(id, as, hs string) string {
		return "id: " + id + "\nurl: http://127.0.0.1:9000\nas_token: " + as + "\nhs_token: " + hs +
			"\nsender_localpart: " + id + "bot\nnamespaces:\n  users:\n    - exclusive: true\n      regex: \"@_" + id + "_.*\"\n"
	}
	good := filepath.Join(dir, "bridge.yaml")
	if err := os.WriteFile(good, []byte(reg("bridge", "a1", "h1")), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("id: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		env     map[string]string
		wantErr string
		wantN   int
	}{
		{"none", nil, "", 0},
		{"file", map[string]string{"CIRRUS_APPSERVICE_FILES": good}, "", 1},
		{"file and env", map[string]string{"CIRRUS_APPSERVICE_FILES": good, "CIRRUS_APPSERVICE_YAML": reg("bot", "a2", "h2")}, "", 2},
		{"missing file", map[string]string{"CIRRUS_APPSERVICE_FILES": filepath.Join(dir, "nope.yaml")}, "CIRRUS_APPSERVICE_FILES", 0},
		{"bad file", map[string]string{"CIRRUS_APPSERVICE_FILES": bad}, "bad.yaml", 0},
		{"same token twice", map[string]string{"CIRRUS_APPSERVICE_FILES": good, "CIRRUS_APPSERVICE_YAML": reg("bot", "a1", "h2")}, "as_token", 0},
		{"bad retry", map[string]string{"CIRRUS_APPSERVICE_RETRY_MIN": "1m", "CIRRUS_APPSERVICE_RETRY_MAX": "1s"}, "CIRRUS_APPSERVICE_RETRY_MIN", 0},
		{"aws needs the queue", map[string]string{"CIRRUS_APPSERVICE_FILES": good, "CIRRUS_STORAGE": "aws",
			"CIRRUS_FEDERATION_QUEUE_URL": "q1", "CIRRUS_FANOUT_QUEUE_URL": "q2"}, "CIRRUS_APPSERVICE_QUEUE_URL", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := map[string]string{"CIRRUS_SERVER_NAME": "example.org"}
			for k, v := range c.env {
				env[k] = v
			}
			cfg, err := Load(func(k string) string { return env[k] })
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want one naming %s", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n := len(cfg.Server.AppServices.Registry.All()); n != c.wantN {
				t.Errorf("%d registrations, want %d", n, c.wantN)
			}
		})
	}
}
