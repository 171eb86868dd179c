package media

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.mau.fi/util/exhttp"
	mfed "maunium.net/go/mautrix/federation"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
)

// remoteServer serves h over TLS on loopback and returns a fetcher that
// reaches it by its server name (ip:port) with certificate checks off.
func remoteServer(t *testing.T, h http.HandlerFunc) (*FederationFetcher, string) {
	t.Helper()
	ts := httptest.NewTLSServer(h)
	t.Cleanup(ts.Close)
	settings := exhttp.SensibleClientSettings.WithGlobalTimeout(10 * time.Second)
	settings.InsecureTLS = true
	c := mfed.NewClient("us.example", mfed.GenerateSigningKey(), mfed.NewInMemoryCache(), settings)
	c.AllowIP = func(net.IP) bool { return true }
	return &FederationFetcher{Client: c, AllowHTTPRedirects: true}, ts.Listener.Addr().String()
}

func multipartAnswer(w http.ResponseWriter, parts ...string) {
	w.Header().Set("Content-Type", "multipart/mixed; boundary=XyZ")
	for _, p := range parts {
		_, _ = io.WriteString(w, "--XyZ\r\n"+p)
	}
	_, _ = io.WriteString(w, "--XyZ--\r\n")
}

func TestFederationFetcherAnswers(t *testing.T) {
	const meta = "Content-Type: application/json\r\n\r\n{}\r\n"
	for _, tc := range []struct {
		name    string
		strict  bool // only https locations
		handler http.HandlerFunc
		body    string // wanted bytes, or
		status  int    // wanted error status and
		code    string // code
	}{
		{name: "bytes", handler: func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasPrefix(r.Header.Get("Authorization"), "X-Matrix ") || r.URL.Query().Get("timeout_ms") != "2000" {
				w.WriteHeader(401)
				return
			}
			multipartAnswer(w, meta, "Content-Type: text/plain\r\nContent-Disposition: attachment; filename=\"a.txt\"\r\n\r\nhello\r\n")
		}, body: "hello"},
		{name: "not multipart", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, "hello")
		}, status: 502, code: "M_UNKNOWN"},
		{name: "metadata not JSON", handler: func(w http.ResponseWriter, r *http.Request) {
			multipartAnswer(w, "Content-Type: application/json\r\n\r\nnope\r\n", "Content-Type: text/plain\r\n\r\nhello\r\n")
		}, status: 502, code: "M_UNKNOWN"},
		{name: "one part only", handler: func(w http.ResponseWriter, r *http.Request) {
			multipartAnswer(w, meta)
		}, status: 502, code: "M_UNKNOWN"},
		{name: "location not http", handler: func(w http.ResponseWriter, r *http.Request) {
			multipartAnswer(w, meta, "Location: file:///etc/passwd\r\n\r\n")
		}, status: 502, code: "M_UNKNOWN"},
		{name: "http location refused outside tests", strict: true, handler: func(w http.ResponseWriter, r *http.Request) {
			multipartAnswer(w, meta, "Location: http://127.0.0.1:1/x\r\n\r\n")
		}, status: 502, code: "M_UNKNOWN"},
		{name: "not found", handler: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(404)
			_, _ = io.WriteString(w, `{"errcode":"M_NOT_FOUND","error":"no"}`)
		}, status: 404, code: "M_NOT_FOUND"},
		{name: "too large", handler: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(502)
			_, _ = io.WriteString(w, `{"errcode":"M_TOO_LARGE","error":"big"}`)
		}, status: 502, code: "M_TOO_LARGE"},
		{name: "server error", handler: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(500)
		}, status: 502, code: "M_UNKNOWN"},
		{name: "legacy fallback", handler: func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/_matrix/federation/") {
				w.WriteHeader(404)
				_, _ = io.WriteString(w, `{"errcode":"M_UNRECOGNIZED","error":"?"}`)
				return
			}
			if r.Header.Get("Authorization") != "" || r.URL.Query().Get("allow_remote") != "false" {
				w.WriteHeader(400)
				return
			}
			_, _ = io.WriteString(w, "legacy")
		}, body: "legacy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, name := remoteServer(t, tc.handler)
			f.AllowHTTPRedirects = !tc.strict
			file, err := f.FetchMedia(context.Background(), RemoteRequest{Server: name, MediaID: "abc", Wait: 2 * time.Second, MaxBytes: 100})
			if tc.body != "" {
				if err != nil {
					t.Fatal(err)
				}
				got, _ := io.ReadAll(file.Body)
				file.Body.Close()
				if string(got) != tc.body {
					t.Fatalf("body %q, want %q", got, tc.body)
				}
				return
			}
			e, ok := httpapi.AsError(err)
			if !ok || e.Status != tc.status || e.Code != tc.code {
				t.Fatalf("got %v, want %d %s", err, tc.status, tc.code)
			}
		})
	}
}
