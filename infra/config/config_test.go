package config

import (
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/core/media"
)

func TestLoad(t *testing.T) {
	base := map[string]string{"CIRRUS_SERVER_NAME": "example.org"}
	cases := []struct {
		name    string
		env     map[string]string
		wantErr string // substring naming the setting; "" = ok
		check   func(t *testing.T, c *Config)
	}{
		{name: "defaults", env: base, check: func(t *testing.T, c *Config) {
			if c.ListenAddr != "127.0.0.1:8008" || c.DataDir != "./data" || c.Storage != StorageEmbedded {
				t.Fatalf("defaults: %+v", c)
			}
			if c.Server.Client.Registration != "closed" {
				t.Fatalf("registration must default to closed, got %s", c.Server.Client.Registration)
			}
			if c.Server.Client.PublicBaseURL != "http://127.0.0.1:8008" {
				t.Fatalf("base url %s", c.Server.Client.PublicBaseURL)
			}
		}},
		{name: "tokens imply token mode", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_REGISTRATION_TOKENS": "x, y"}, check: func(t *testing.T, c *Config) {
			if c.Server.Client.Registration != "token" || len(c.Server.Client.RegistrationTokens) != 2 {
				t.Fatalf("%+v", c.Server.Client)
			}
		}},
		{name: "open warns", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_REGISTRATION": "open"}, check: func(t *testing.T, c *Config) {
			if c.RegistrationWarning == "" {
				t.Fatal("no warning for open registration")
			}
		}},
		{name: "shared secret off by default", env: base, check: func(t *testing.T, c *Config) {
			if c.Server.Client.RegistrationSharedSecret != "" {
				t.Fatal("shared-secret registration must be off unless configured")
			}
		}},
		{name: "shared secret", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_REGISTRATION_SHARED_SECRET": "0123456789abcdef0123"}, check: func(t *testing.T, c *Config) {
			if c.Server.Client.RegistrationSharedSecret != "0123456789abcdef0123" {
				t.Fatalf("secret %q", c.Server.Client.RegistrationSharedSecret)
			}
		}},
		{name: "short shared secret", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_REGISTRATION_SHARED_SECRET": "short"}, wantErr: "CIRRUS_REGISTRATION_SHARED_SECRET"},
		{name: "missing server name", env: map[string]string{}, wantErr: "CIRRUS_SERVER_NAME"},
		{name: "workers on by default", env: base, check: func(t *testing.T, c *Config) {
			if !c.Workers {
				t.Fatal("the all-in-one must run its workers unless told not to")
			}
		}},
		{name: "workers off needs aws", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_WORKERS": "false"}, wantErr: "CIRRUS_WORKERS"},
		{name: "bad server name", env: map[string]string{"CIRRUS_SERVER_NAME": "bad name"}, wantErr: "CIRRUS_SERVER_NAME"},
		{name: "bad listen", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_LISTEN_ADDR": "8008"}, wantErr: "CIRRUS_LISTEN_ADDR"},
		{name: "bad storage", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_STORAGE": "postgres"}, wantErr: "CIRRUS_STORAGE"},
		{name: "bad registration", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_REGISTRATION": "maybe"}, wantErr: "CIRRUS_REGISTRATION"},
		{name: "token mode without tokens", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_REGISTRATION": "token"}, wantErr: "CIRRUS_REGISTRATION_TOKENS"},
		{name: "aws without queues", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_STORAGE": "aws"}, wantErr: "CIRRUS_FEDERATION_QUEUE_URL"},
		{name: "bad bool", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_GUEST_ACCESS": "yes please"}, wantErr: "CIRRUS_GUEST_ACCESS"},
		{name: "bad int", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_BCRYPT_COST": "99"}, wantErr: "CIRRUS_BCRYPT_COST"},
		{name: "bad duration", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_ACCESS_TOKEN_LIFETIME": "soon"}, wantErr: "CIRRUS_ACCESS_TOKEN_LIFETIME"},
		{name: "media defaults", env: base, check: func(t *testing.T, c *Config) {
			m := c.Server.Media
			if m.MaxUploadBytes != 50<<20 || m.LegacyUnauthenticated || m.PreviewAllowPrivate || m.RedirectAbove != 4<<20 || m.DirectLimit != 0 || m.MaxThumbnailPixels != 50_000_000 || m.UploadURLs {
				t.Fatalf("media defaults: %+v", m)
			}
		}},
		{name: "media settings", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_MAX_UPLOAD_BYTES": "1000", "CIRRUS_MEDIA_LEGACY_UNAUTHENTICATED": "true",
			"CIRRUS_URL_PREVIEW_ALLOW_PRIVATE": "true", "CIRRUS_MEDIA_REDIRECT_BYTES": "0", "CIRRUS_MEDIA_DIRECT_LIMIT_BYTES": "500", "CIRRUS_THUMBNAIL_MAX_PIXELS": "1000000"}, check: func(t *testing.T, c *Config) {
			m := c.Server.Media
			if m.MaxUploadBytes != 1000 || !m.LegacyUnauthenticated || !m.PreviewAllowPrivate || m.RedirectAbove != 0 || m.DirectLimit != 500 || m.MaxThumbnailPixels != 1000000 {
				t.Fatalf("media settings: %+v", m)
			}
			if m.UploadLimit() != 500 {
				t.Fatalf("upload limit %d, want the direct limit", m.UploadLimit())
			}
		}},
		{name: "lambda limits media", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "AWS_LAMBDA_FUNCTION_NAME": "cirrus-Media"}, check: func(t *testing.T, c *Config) {
			if c.Server.Media.DirectLimit != 4<<20 || c.Server.Media.UploadLimit() != 4<<20 || !c.Server.Media.UploadURLs {
				t.Fatalf("in Lambda: %+v", c.Server.Media)
			}
		}},
		{name: "upload URLs off in lambda", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "AWS_LAMBDA_FUNCTION_NAME": "cirrus-Media", "CIRRUS_MEDIA_UPLOAD_URLS": "false"}, check: func(t *testing.T, c *Config) {
			if c.Server.Media.UploadURLs {
				t.Fatal("CIRRUS_MEDIA_UPLOAD_URLS=false ignored")
			}
		}},
		{name: "upload origin", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "AWS_LAMBDA_FUNCTION_NAME": "cirrus-Media", "CIRRUS_MEDIA_UPLOAD_ORIGIN": "https://upload.a.org:8443"}, check: func(t *testing.T, c *Config) {
			if m := c.Server.Media; m.UploadOrigin != "https://upload.a.org:8443" || m.UploadLimit() != media.ProxiedUploadLimit {
				t.Fatalf("with an upload origin: %+v, limit %d", m, m.UploadLimit())
			}
		}},
		{name: "upload origin with a path", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_MEDIA_UPLOAD_ORIGIN": "https://upload.a.org/media"}, wantErr: "CIRRUS_MEDIA_UPLOAD_ORIGIN"},
		{name: "upload origin without scheme", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_MEDIA_UPLOAD_ORIGIN": "upload.a.org"}, wantErr: "CIRRUS_MEDIA_UPLOAD_ORIGIN"},
		{name: "bad upload URLs", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_MEDIA_UPLOAD_URLS": "maybe"}, wantErr: "CIRRUS_MEDIA_UPLOAD_URLS"},
		{name: "bad max upload", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_MAX_UPLOAD_BYTES": "lots"}, wantErr: "CIRRUS_MAX_UPLOAD_BYTES"},
		{name: "zero max upload", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_MAX_UPLOAD_BYTES": "0"}, wantErr: "CIRRUS_MAX_UPLOAD_BYTES"},
		{name: "bad legacy media", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_MEDIA_LEGACY_UNAUTHENTICATED": "sometimes"}, wantErr: "CIRRUS_MEDIA_LEGACY_UNAUTHENTICATED"},
		{name: "bad preview private", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_URL_PREVIEW_ALLOW_PRIVATE": "y"}, wantErr: "CIRRUS_URL_PREVIEW_ALLOW_PRIVATE"},
		{name: "bad redirect bytes", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_MEDIA_REDIRECT_BYTES": "-1"}, wantErr: "CIRRUS_MEDIA_REDIRECT_BYTES"},
		{name: "bad direct limit", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_MEDIA_DIRECT_LIMIT_BYTES": "x"}, wantErr: "CIRRUS_MEDIA_DIRECT_LIMIT_BYTES"},
		{name: "bad thumbnail pixels", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_THUMBNAIL_MAX_PIXELS": "0"}, wantErr: "CIRRUS_THUMBNAIL_MAX_PIXELS"},
		{name: "bad log level", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_LOG_LEVEL": "loud"}, wantErr: "CIRRUS_LOG_LEVEL"},
		{name: "federation off and safe by default", env: base, check: func(t *testing.T, c *Config) {
			f := c.Server.Federation
			if c.FederationListenAddr != "" || f.SkipVerify || f.AllowPrivate || len(c.FederationWarnings) != 0 {
				t.Fatalf("federation defaults: %+v %+v", c, f)
			}
			if f.MinBackoff <= 0 || f.MaxBackoff < f.MinBackoff || f.RequestTimeout <= 0 {
				t.Fatalf("sender defaults: %+v", f)
			}
		}},
		{name: "federation test switches", env: map[string]string{"CIRRUS_SERVER_NAME": "localhost:8448",
			"CIRRUS_FEDERATION_LISTEN_ADDR": "127.0.0.1:8448", "CIRRUS_FEDERATION_TLS_SKIP_VERIFY": "true",
			"CIRRUS_FEDERATION_ALLOW_PRIVATE_ADDRS": "true", "CIRRUS_FEDERATION_RETRY_MIN": "100ms", "CIRRUS_FEDERATION_RETRY_MAX": "1s"},
			check: func(t *testing.T, c *Config) {
				f := c.Server.Federation
				if c.FederationListenAddr != "127.0.0.1:8448" || !f.SkipVerify || !f.AllowPrivate || len(c.FederationWarnings) != 2 {
					t.Fatalf("federation settings: %+v %+v", c, f)
				}
			}},
		{name: "bad federation listen", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_FEDERATION_LISTEN_ADDR": "8448"}, wantErr: "CIRRUS_FEDERATION_LISTEN_ADDR"},
		{name: "cert without key", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_FEDERATION_TLS_CERT": "/c.pem"}, wantErr: "CIRRUS_FEDERATION_TLS_KEY"},
		{name: "ca without key", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_FEDERATION_TLS_CA_CERT": "/ca.pem"}, wantErr: "CIRRUS_FEDERATION_TLS_CA_KEY"},
		{name: "ca and cert", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_FEDERATION_TLS_CA_CERT": "/ca.pem", "CIRRUS_FEDERATION_TLS_CA_KEY": "/ca.key",
			"CIRRUS_FEDERATION_TLS_CERT": "/c.pem", "CIRRUS_FEDERATION_TLS_KEY": "/c.key"}, wantErr: "exclude each other"},
		{name: "ca file missing", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_FEDERATION_TLS_CA_CERT": "/nonexistent/ca.pem", "CIRRUS_FEDERATION_TLS_CA_KEY": "/nonexistent/ca.key"}, wantErr: "CIRRUS_FEDERATION_TLS_CA_CERT"},
		{name: "bad skip verify", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_FEDERATION_TLS_SKIP_VERIFY": "yes"}, wantErr: "CIRRUS_FEDERATION_TLS_SKIP_VERIFY"},
		{name: "retry min above max", env: map[string]string{"CIRRUS_SERVER_NAME": "a.org", "CIRRUS_FEDERATION_RETRY_MIN": "2h"}, wantErr: "CIRRUS_FEDERATION_RETRY_MIN"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(func(k string) string { return tc.env[k] })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("want one-line error naming %s, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}
