package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

// benchFileSize is the file the media throughput benchmarks move.
const benchFileSize = 20 << 20

// BenchmarkMediaThroughput uploads and downloads a 20 MiB file over HTTP
// on the embedded engine and on the aws engine (DynamoDB stand-in, the
// in-process S3 stand-in; downloads there are redirected to a presigned
// URL and read from the stand-in). Run with:
//
//	go test -run '^$' -bench MediaThroughput -benchtime 10x ./e2e/
func BenchmarkMediaThroughput(b *testing.B) {
	for _, engine := range []string{"embedded", "aws"} {
		b.Run(engine, func(b *testing.B) {
			env := testenv.Start(b, engine, map[string]string{"CIRRUS_MAX_UPLOAD_BYTES": "104857600"})
			c, err := mautrix.NewClient(env.URL, "", "")
			if err != nil {
				b.Fatal(err)
			}
			c.Client = env.HTTP
			reg, err := c.RegisterDummy(context.Background(), &mautrix.ReqRegister[any]{Username: "bench", Password: "pw"})
			if err != nil {
				b.Fatal(err)
			}
			c.AccessToken = reg.AccessToken
			hc := mediaHTTP(env)
			data := randomBytes(benchFileSize)
			upload := func(i int) id.ContentURI {
				// A different first byte each time: equal contents would be
				// stored only once.
				data[0], data[1], data[2] = byte(i), byte(i>>8), byte(i>>16)
				req, _ := http.NewRequest("POST", env.URL+"/_matrix/media/v3/upload?filename=bench.bin", bytes.NewReader(data))
				req.Header.Set("Authorization", "Bearer "+c.AccessToken)
				req.Header.Set("Content-Type", "application/octet-stream")
				resp, err := hc.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				defer resp.Body.Close()
				var out struct {
					ContentURI id.ContentURI `json:"content_uri"`
				}
				if resp.StatusCode != 200 {
					raw, _ := io.ReadAll(resp.Body)
					b.Fatalf("upload: %d %s", resp.StatusCode, raw)
				}
				if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
					b.Fatal(err)
				}
				return out.ContentURI
			}
			b.Run("upload", func(b *testing.B) {
				b.SetBytes(benchFileSize)
				for i := 0; b.Loop(); i++ {
					upload(i + 1)
				}
			})
			mxc := upload(0)
			b.Run("download", func(b *testing.B) {
				b.SetBytes(benchFileSize)
				for b.Loop() {
					req, _ := http.NewRequest("GET", env.URL+downloadPath(mxc), nil)
					req.Header.Set("Authorization", "Bearer "+c.AccessToken)
					resp, err := hc.Do(req)
					if err != nil {
						b.Fatal(err)
					}
					n, err := io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err != nil || resp.StatusCode != 200 || n != benchFileSize {
						b.Fatalf("download: %d, %d bytes, %v", resp.StatusCode, n, err)
					}
				}
			})
		})
	}
}
