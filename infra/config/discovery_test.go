package config

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/core/clientapi"
)

func TestDiscoverySettings(t *testing.T) {
	cases := []struct {
		name    string
		env     map[string]string
		wantErr string // a setting the error must name
		want    clientapi.DiscoveryConfig
	}{
		{name: "default", env: map[string]string{}, want: clientapi.DiscoveryConfig{TurnTTL: 24 * time.Hour}},
		{name: "contacts and page", env: map[string]string{
			"CIRRUS_SUPPORT_CONTACTS": "m.role.admin=@admin:example.org, m.role.security=sec@example.org,ops@example.org",
			"CIRRUS_SUPPORT_PAGE":     "https://example.org/help",
		}, want: clientapi.DiscoveryConfig{
			SupportContacts: []clientapi.SupportContact{
				{Role: "m.role.admin", MatrixID: "@admin:example.org"},
				{Role: "m.role.security", EmailAddress: "sec@example.org"},
				{Role: "m.role.admin", EmailAddress: "ops@example.org"},
			},
			SupportPage: "https://example.org/help", TurnTTL: 24 * time.Hour,
		}},
		{name: "turn", env: map[string]string{
			"CIRRUS_TURN_URIS": "turn:turn.example.org?transport=udp,turns:turn.example.org", "CIRRUS_TURN_SHARED_SECRET": "s3cret", "CIRRUS_TURN_TTL": "1h",
		}, want: clientapi.DiscoveryConfig{
			TurnURIs: []string{"turn:turn.example.org?transport=udp", "turns:turn.example.org"}, TurnSharedSecret: "s3cret", TurnTTL: time.Hour,
		}},
		{name: "contact not an address", env: map[string]string{"CIRRUS_SUPPORT_CONTACTS": "m.role.admin=nobody"}, wantErr: "CIRRUS_SUPPORT_CONTACTS"},
		{name: "contact bad user id", env: map[string]string{"CIRRUS_SUPPORT_CONTACTS": "@nobody"}, wantErr: "CIRRUS_SUPPORT_CONTACTS"},
		{name: "contact empty role", env: map[string]string{"CIRRUS_SUPPORT_CONTACTS": "=@a:example.org"}, wantErr: "CIRRUS_SUPPORT_CONTACTS"},
		{name: "page not a URL", env: map[string]string{"CIRRUS_SUPPORT_PAGE": "example.org/help"}, wantErr: "CIRRUS_SUPPORT_PAGE"},
		{name: "turn without secret", env: map[string]string{"CIRRUS_TURN_URIS": "turn:t.example.org"}, wantErr: "CIRRUS_TURN_SHARED_SECRET"},
		{name: "secret without turn", env: map[string]string{"CIRRUS_TURN_SHARED_SECRET": "s"}, wantErr: "CIRRUS_TURN_URIS"},
		{name: "turn uri scheme", env: map[string]string{"CIRRUS_TURN_URIS": "http://t.example.org", "CIRRUS_TURN_SHARED_SECRET": "s"}, wantErr: "CIRRUS_TURN_URIS"},
		{name: "ttl too short", env: map[string]string{"CIRRUS_TURN_TTL": "10s"}, wantErr: "CIRRUS_TURN_TTL"},
		{name: "search all users", env: map[string]string{"CIRRUS_USER_DIRECTORY_SEARCH_ALL_USERS": "true"},
			want: clientapi.DiscoveryConfig{TurnTTL: 24 * time.Hour, SearchAllUsers: true}},
		{name: "search all users not a bool", env: map[string]string{"CIRRUS_USER_DIRECTORY_SEARCH_ALL_USERS": "everyone"}, wantErr: "CIRRUS_USER_DIRECTORY_SEARCH_ALL_USERS"},
		{name: "ttl not a duration", env: map[string]string{"CIRRUS_TURN_TTL": "a day"}, wantErr: "CIRRUS_TURN_TTL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"CIRRUS_SERVER_NAME": "example.org"}
			for k, v := range tc.env {
				env[k] = v
			}
			c, err := Load(func(k string) string { return env[k] })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want an error naming %s, got %v", tc.wantErr, err)
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Fatalf("error echoes the secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c.Server.Discovery, tc.want) {
				t.Fatalf("discovery settings %+v, want %+v", c.Server.Discovery, tc.want)
			}
		})
	}
}
