package config

import (
	"strings"
	"testing"
	"time"
)

func TestSyncSettings(t *testing.T) {
	cases := []struct {
		name    string
		env     map[string]string
		wantErr bool
		wait    time.Duration
		poll    bool
	}{
		{name: "default", env: map[string]string{}, wait: 25 * time.Second},
		{name: "set", env: map[string]string{"CIRRUS_SYNC_MAX_WAIT": "10s"}, wait: 10 * time.Second},
		{name: "upper bound", env: map[string]string{"CIRRUS_SYNC_MAX_WAIT": "29s"}, wait: 29 * time.Second},
		{name: "too long for API Gateway", env: map[string]string{"CIRRUS_SYNC_MAX_WAIT": "30s"}, wantErr: true},
		{name: "zero", env: map[string]string{"CIRRUS_SYNC_MAX_WAIT": "0s"}, wantErr: true},
		{name: "not a duration", env: map[string]string{"CIRRUS_SYNC_MAX_WAIT": "soon"}, wantErr: true},
		{name: "aws polls", env: map[string]string{"CIRRUS_STORAGE": "aws", "CIRRUS_AWS_CREATE_RESOURCES": "true"}, wait: 25 * time.Second, poll: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"CIRRUS_SERVER_NAME": "example.org"}
			for k, v := range tc.env {
				env[k] = v
			}
			c, err := Load(func(k string) string { return env[k] })
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "CIRRUS_SYNC_MAX_WAIT") {
					t.Fatalf("want an error naming CIRRUS_SYNC_MAX_WAIT, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Server.Sync.MaxWait != tc.wait || c.Server.Sync.Poll != tc.poll {
				t.Fatalf("sync settings %+v, want wait %s poll %v", c.Server.Sync, tc.wait, tc.poll)
			}
		})
	}
}
