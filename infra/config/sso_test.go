package config

import (
	"reflect"
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/core/clientapi"
)

func TestSSOSettings(t *testing.T) {
	cases := []struct {
		name    string
		env     map[string]string
		wantErr string // what the error must say
		want    []clientapi.SSOProvider
	}{
		{name: "none", env: map[string]string{}},
		{name: "one provider, name defaults to id", env: map[string]string{"CIRRUS_OIDC_PROVIDERS": `[{"id":"kc","issuer":"https://id.example.org/realms/x","client_id":"c","client_secret":"s","scopes":["openid"],"localpart_claim":"email"}]`},
			want: []clientapi.SSOProvider{{ID: "kc", Name: "kc", Issuer: "https://id.example.org/realms/x", ClientID: "c", ClientSecret: "s", Scopes: []string{"openid"}, LocalpartClaim: "email"}}},
		{name: "trusted clients", env: map[string]string{"CIRRUS_OIDC_TRUSTED_CLIENTS": "https://app.example.org/, im.app://"}},
		{name: "not json", env: map[string]string{"CIRRUS_OIDC_PROVIDERS": `{"id":"x"}`}, wantErr: "CIRRUS_OIDC_PROVIDERS"},
		{name: "unknown field", env: map[string]string{"CIRRUS_OIDC_PROVIDERS": `[{"id":"x","issuer":"https://a.example","client_id":"c","secret":"s"}]`}, wantErr: "unknown field"},
		{name: "no id", env: map[string]string{"CIRRUS_OIDC_PROVIDERS": `[{"issuer":"https://a.example","client_id":"c"}]`}, wantErr: "id"},
		{name: "id with slash", env: map[string]string{"CIRRUS_OIDC_PROVIDERS": `[{"id":"a/b","issuer":"https://a.example","client_id":"c"}]`}, wantErr: "id"},
		{name: "duplicate id", env: map[string]string{"CIRRUS_OIDC_PROVIDERS": `[{"id":"a","issuer":"https://a.example","client_id":"c"},{"id":"a","issuer":"https://b.example","client_id":"c"}]`}, wantErr: "twice"},
		{name: "no client id", env: map[string]string{"CIRRUS_OIDC_PROVIDERS": `[{"id":"a","issuer":"https://a.example"}]`}, wantErr: "client_id"},
		{name: "issuer not a URL", env: map[string]string{"CIRRUS_OIDC_PROVIDERS": `[{"id":"a","issuer":"a.example","client_id":"c"}]`}, wantErr: "issuer"},
		{name: "icon not mxc", env: map[string]string{"CIRRUS_OIDC_PROVIDERS": `[{"id":"a","issuer":"https://a.example","client_id":"c","icon":"https://x/i.png"}]`}, wantErr: "icon"},
		{name: "trusted client without path", env: map[string]string{"CIRRUS_OIDC_TRUSTED_CLIENTS": "https://app.example.org"}, wantErr: "CIRRUS_OIDC_TRUSTED_CLIENTS"},
		{name: "trusted client relative", env: map[string]string{"CIRRUS_OIDC_TRUSTED_CLIENTS": "app/"}, wantErr: "CIRRUS_OIDC_TRUSTED_CLIENTS"},
		{name: "allow private not a bool", env: map[string]string{"CIRRUS_OIDC_ALLOW_PRIVATE": "maybe"}, wantErr: "CIRRUS_OIDC_ALLOW_PRIVATE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &Config{}
			err := loadSSO(func(k string) string { return tc.env[k] }, c)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), `"s"`) {
					t.Fatalf("error echoes the secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.env["CIRRUS_OIDC_TRUSTED_CLIENTS"] != "" && len(c.Server.SSO.TrustedClients) == 0 {
				t.Fatal("trusted clients not read")
			}
			if !reflect.DeepEqual(c.Server.SSO.Providers, tc.want) {
				t.Fatalf("providers = %+v, want %+v", c.Server.SSO.Providers, tc.want)
			}
		})
	}
}
