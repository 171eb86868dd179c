package config

import (
	"maps"
	"strings"
	"testing"
)

func TestPolicyServerAndSharedLimitSettings(t *testing.T) {
	const key = "6yhHGKhCiXTSEN2ksjV7kX_N6rBQZ3Xb-M7LlC6NS-s"
	cases := []struct {
		name     string
		env      map[string]string
		wantErr  string
		keys     map[string]string
		shared   bool
		noLimits bool
	}{
		{name: "defaults", env: map[string]string{}},
		{name: "aws shares limits", env: map[string]string{"CIRRUS_STORAGE": "aws", "CIRRUS_FEDERATION_QUEUE_URL": "q", "CIRRUS_FANOUT_QUEUE_URL": "q"}, shared: true},
		{name: "aws per process", env: map[string]string{"CIRRUS_STORAGE": "aws", "CIRRUS_FEDERATION_QUEUE_URL": "q", "CIRRUS_FANOUT_QUEUE_URL": "q", "CIRRUS_RATE_LIMITS_SHARED": "false"}},
		{name: "embedded shared", env: map[string]string{"CIRRUS_RATE_LIMITS_SHARED": "true"}, shared: true},
		{name: "no limits", env: map[string]string{"CIRRUS_RATE_LIMITS": "false"}, noLimits: true},
		{name: "shared not a bool", env: map[string]string{"CIRRUS_RATE_LIMITS_SHARED": "maybe"}, wantErr: "CIRRUS_RATE_LIMITS_SHARED"},
		{name: "policy keys", env: map[string]string{"CIRRUS_POLICY_SERVER_KEYS": "ed25519=" + key + ", other=AAAA"},
			keys: map[string]string{"ed25519": key, "other": "AAAA"}},
		{name: "policy without ed25519", env: map[string]string{"CIRRUS_POLICY_SERVER_KEYS": "other=AAAA"}, wantErr: "CIRRUS_POLICY_SERVER_KEYS"},
		{name: "policy key not base64", env: map[string]string{"CIRRUS_POLICY_SERVER_KEYS": "ed25519=not base64!"}, wantErr: "CIRRUS_POLICY_SERVER_KEYS"},
		{name: "policy key wrong size", env: map[string]string{"CIRRUS_POLICY_SERVER_KEYS": "ed25519=AAAA"}, wantErr: "CIRRUS_POLICY_SERVER_KEYS"},
		{name: "policy entry without =", env: map[string]string{"CIRRUS_POLICY_SERVER_KEYS": key}, wantErr: "CIRRUS_POLICY_SERVER_KEYS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"CIRRUS_SERVER_NAME": "example.org"}
			maps.Copy(env, tc.env)
			c, err := Load(func(k string) string { return env[k] })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want an error naming %s, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(c.Server.Discovery.PolicyServerKeys, tc.keys) {
				t.Fatalf("policy keys %v, want %v", c.Server.Discovery.PolicyServerKeys, tc.keys)
			}
			if c.Server.SharedLimits != tc.shared || (c.Server.Limits == nil) != tc.noLimits {
				t.Fatalf("shared %v limits %v", c.Server.SharedLimits, c.Server.Limits)
			}
		})
	}
}
