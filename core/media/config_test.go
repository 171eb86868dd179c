package media

import "testing"

// m.upload.size is what a standard client can upload through the
// deployment's transport, whatever MSC3870 clients can do.
func TestUploadLimit(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want int64
	}{
		{"all-in-one", Config{MaxUploadBytes: 50 << 20}, 50 << 20},
		{"lambda", Config{MaxUploadBytes: 50 << 20, DirectLimit: LambdaPayloadLimit}, LambdaPayloadLimit},
		{"lambda with upload URLs", Config{MaxUploadBytes: 50 << 20, DirectLimit: LambdaPayloadLimit, UploadURLs: true}, LambdaPayloadLimit},
		{"lambda, small maximum", Config{MaxUploadBytes: 1 << 20, DirectLimit: LambdaPayloadLimit}, 1 << 20},
		{"upload origin", Config{MaxUploadBytes: 50 << 20, DirectLimit: LambdaPayloadLimit, UploadOrigin: "https://up.example.org"}, ProxiedUploadLimit},
		{"upload origin, small maximum", Config{MaxUploadBytes: 5 << 20, DirectLimit: LambdaPayloadLimit, UploadOrigin: "https://up.example.org"}, 5 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.cfg.UploadLimit(); got != tc.want {
				t.Fatalf("UploadLimit() = %d, want %d", got, tc.want)
			}
		})
	}
	if ProxiedUploadLimit >= 10_000_000 || ProxiedUploadLimit <= LambdaPayloadLimit {
		t.Fatalf("ProxiedUploadLimit %d must be below API Gateway's 10 MB and above the Lambda limit", ProxiedUploadLimit)
	}
}
