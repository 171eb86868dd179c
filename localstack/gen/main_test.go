package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/cirrus-matrix/cirrus/core/resources"
	"github.com/cirrus-matrix/cirrus/infra/config"
	"github.com/cirrus-matrix/cirrus/internal/deploycheck"
)

const (
	scriptPath   = "../init/ready.d/10-cirrus.sh"
	samEnvPath   = "../sam-env.json"
	templateFile = "../../template.yaml"
)

// The committed files must be exactly what the generator writes now.
func TestCommittedFilesAreCurrent(t *testing.T) {
	var script bytes.Buffer
	if err := writeScript(&script, templateFile); err != nil {
		t.Fatal(err)
	}
	compareFile(t, scriptPath, script.Bytes(), "go run ./localstack/gen > localstack/init/ready.d/10-cirrus.sh")

	var env bytes.Buffer
	if err := writeSAMEnv(&env); err != nil {
		t.Fatal(err)
	}
	compareFile(t, samEnvPath, env.Bytes(), "go run ./localstack/gen -sam-env > localstack/sam-env.json")

	st, err := os.Stat(scriptPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&0o111 == 0 {
		t.Errorf("%s is not executable: chmod +x it", scriptPath)
	}
}

func compareFile(t *testing.T, path string, want []byte, regenerate string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (create it from the repository root with: %s)", err, regenerate)
	}
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		line := 0
		for line < len(gl) && line < len(wl) && gl[line] == wl[line] {
			line++
		}
		show := func(l []string) string {
			if line < len(l) {
				return l[line]
			}
			return "(end of file)"
		}
		t.Errorf("%s is stale; regenerate it from the repository root with:\n  %s\nfirst difference at line %d:\n  committed: %s\n  generated: %s",
			path, regenerate, line+1, show(gl), show(wl))
	}
}

// The sam local overrides must be variables infra/config reads, and must
// point it at the LocalStack resources.
func TestSAMEnvMatchesConfig(t *testing.T) {
	var buf bytes.Buffer
	if err := writeSAMEnv(&buf); err != nil {
		t.Fatal(err)
	}
	var file struct{ Parameters map[string]string }
	if err := json.Unmarshal(buf.Bytes(), &file); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"CIRRUS_SERVER_NAME": "localhost:3000", "CIRRUS_STORAGE": config.StorageAWS}
	for k, v := range file.Parameters {
		env[k] = v
	}
	read := map[string]bool{}
	cfg, err := config.Load(func(k string) string { read[k] = true; return env[k] })
	if err != nil {
		t.Fatalf("config.Load with the sam local variables: %v", err)
	}
	for k := range file.Parameters {
		if !read[k] {
			t.Errorf("sam-env.json sets %s, which infra/config never reads", k)
		}
	}
	if cfg.Table != resources.Table.Name || cfg.MediaBucket != resources.MediaBucket {
		t.Errorf("table %q / bucket %q, want %q / %q", cfg.Table, cfg.MediaBucket, resources.Table.Name, resources.MediaBucket)
	}
	for _, q := range resources.Queues {
		if got := file.Parameters[deploycheck.QueueEnvVar(q.Name)]; !strings.HasSuffix(got, "/"+q.Name) {
			t.Errorf("%s = %q, want the URL of %s", deploycheck.QueueEnvVar(q.Name), got, q.Name)
		}
	}
	if cfg.FederationQueueURL == "" || cfg.FanoutQueueURL == "" {
		t.Errorf("queue URLs not picked up by infra/config: %+v", cfg)
	}
}

// The script is run here with a stand-in for awslocal that records every
// call, so what it would create in LocalStack can be compared with
// core/resources without Docker.
func TestScriptCreatesTheResources(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	dir := t.TempDir()
	stub := `#!/bin/sh
{ for a in "$@"; do printf '%s\n' "$a"; done; echo "----"; } >> "$AWSLOCAL_LOG"
prev=""; name=""; url=""
for a in "$@"; do
  [ "$prev" = "--queue-name" ] && name=$a
  [ "$prev" = "--queue-url" ] && url=$a
  prev=$a
done
case "$1 $2" in
  "dynamodb describe-table"|"s3api head-bucket") exit 1 ;;
  "sqs create-queue") echo "http://stub:4566/000000000000/$name" ;;
  "sqs get-queue-attributes") echo "arn:aws:sqs:us-east-1:000000000000:${url##*/}" ;;
esac
`
	if err := os.WriteFile(filepath.Join(dir, "awslocal"), []byte(stub), 0o755); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "calls.log")
	var script bytes.Buffer
	if err := writeScript(&script, templateFile); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", script.String())
	cmd.Env = append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"), "AWSLOCAL_LOG="+logPath)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("script failed: %v\n%s", err, out)
	}
	logData, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	var calls [][]string
	for _, c := range strings.Split(strings.TrimSuffix(string(logData), "----\n"), "----\n") {
		calls = append(calls, strings.Split(strings.TrimSuffix(c, "\n"), "\n"))
	}
	flag := func(call []string, name string) string {
		for i := 0; i+1 < len(call); i++ {
			if call[i] == name {
				return call[i+1]
			}
		}
		return ""
	}
	find := func(service, op string) [][]string {
		var out [][]string
		for _, c := range calls {
			if len(c) >= 2 && c[0] == service && c[1] == op {
				out = append(out, c)
			}
		}
		return out
	}

	// The table.
	tb := resources.Table
	ct := find("dynamodb", "create-table")
	if len(ct) != 1 {
		t.Fatalf("want one create-table call, got %d", len(ct))
	}
	if got := flag(ct[0], "--table-name"); got != tb.Name {
		t.Errorf("table name %q, want %q", got, tb.Name)
	}
	if got := flag(ct[0], "--billing-mode"); got != "PAY_PER_REQUEST" {
		t.Errorf("billing mode %q", got)
	}
	joined := strings.Join(ct[0], " ")
	for _, want := range []string{
		"AttributeName=" + tb.PK + ",KeyType=HASH", "AttributeName=" + tb.SK + ",KeyType=RANGE",
		"AttributeName=" + tb.IndexPK + ",AttributeType=S", "AttributeName=" + tb.IndexSK + ",AttributeType=S",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("create-table lacks %s", want)
		}
	}
	var gsis []struct {
		IndexName  string
		KeySchema  []struct{ AttributeName, KeyType string }
		Projection struct{ ProjectionType string }
	}
	if err := json.Unmarshal([]byte(flag(ct[0], "--global-secondary-indexes")), &gsis); err != nil {
		t.Fatalf("GSI JSON: %v", err)
	}
	if len(gsis) != 1 || gsis[0].IndexName != tb.Index || len(gsis[0].KeySchema) != 2 ||
		gsis[0].KeySchema[0].AttributeName != tb.IndexPK || gsis[0].KeySchema[0].KeyType != "HASH" ||
		gsis[0].KeySchema[1].AttributeName != tb.IndexSK || gsis[0].KeySchema[1].KeyType != "RANGE" ||
		gsis[0].Projection.ProjectionType != "ALL" {
		t.Errorf("GSI %+v does not match resources.Table", gsis)
	}
	ttl := find("dynamodb", "update-time-to-live")
	if len(ttl) != 1 || flag(ttl[0], "--time-to-live-specification") != "Enabled=true,AttributeName="+tb.TTLAttr {
		t.Errorf("TTL calls %v, want TTL on %s", ttl, tb.TTLAttr)
	}

	// The bucket.
	if cb := find("s3api", "create-bucket"); len(cb) != 1 || flag(cb[0], "--bucket") != resources.MediaBucket {
		t.Errorf("create-bucket calls %v, want one for %s", cb, resources.MediaBucket)
	}
	for _, op := range []string{"put-public-access-block", "put-bucket-encryption", "put-bucket-cors"} {
		c := find("s3api", op)
		if len(c) != 1 {
			t.Errorf("want one %s call, got %d", op, len(c))
			continue
		}
		var v any
		if err := json.Unmarshal([]byte(c[0][len(c[0])-1]), &v); err != nil {
			t.Errorf("%s: bad JSON: %v", op, err)
		}
	}

	// The queues and their dead-letter queues.
	created := map[string]map[string]string{}
	for _, c := range find("sqs", "create-queue") {
		attrs := map[string]string{}
		if err := json.Unmarshal([]byte(flag(c, "--attributes")), &attrs); err != nil {
			t.Fatalf("create-queue %s: attributes are not JSON: %v", flag(c, "--queue-name"), err)
		}
		created[flag(c, "--queue-name")] = attrs
	}
	if len(created) != 2*len(resources.Queues) {
		t.Errorf("created queues %v, want each of resources.Queues and its dead-letter queue", created)
	}
	for _, q := range resources.Queues {
		main, dlq := created[q.Name], created[q.DeadLetterName()]
		if main == nil || dlq == nil {
			t.Errorf("%s or %s not created", q.Name, q.DeadLetterName())
			continue
		}
		want := map[string]string{
			"FifoQueue":              strconv.FormatBool(q.FIFO),
			"VisibilityTimeout":      seconds(q.VisibilityTimeout),
			"MessageRetentionPeriod": seconds(q.Retention),
		}
		for k, v := range want {
			if main[k] != v {
				t.Errorf("%s: %s = %q, want %q", q.Name, k, main[k], v)
			}
		}
		if dlq["FifoQueue"] != strconv.FormatBool(q.FIFO) {
			t.Errorf("%s: FifoQueue = %q", q.DeadLetterName(), dlq["FifoQueue"])
		}
		var redrive struct {
			DeadLetterTargetArn string `json:"deadLetterTargetArn"`
			MaxReceiveCount     int    `json:"maxReceiveCount"`
		}
		if err := json.Unmarshal([]byte(main["RedrivePolicy"]), &redrive); err != nil {
			t.Errorf("%s: RedrivePolicy %q: %v", q.Name, main["RedrivePolicy"], err)
			continue
		}
		if !strings.HasSuffix(redrive.DeadLetterTargetArn, ":"+q.DeadLetterName()) || redrive.MaxReceiveCount != q.MaxReceives {
			t.Errorf("%s: redrive %+v, want %s after %d receives", q.Name, redrive, q.DeadLetterName(), q.MaxReceives)
		}
	}
}

// The compose file cannot be run here (no Docker engine); check the parts
// the rest of the setup relies on.
func TestComposeFile(t *testing.T) {
	data, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Services map[string]struct {
			Image       string
			Ports       []string
			Environment map[string]string
			Volumes     []string
		}
		Networks map[string]struct{ Name string }
	}
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	ls, ok := c.Services[composeHost]
	if !ok {
		t.Fatalf("no service %q (sam-env.json's queue URLs use that host name)", composeHost)
	}
	if !strings.HasPrefix(ls.Image, "localstack/localstack") {
		t.Errorf("image %q", ls.Image)
	}
	for _, s := range []string{"dynamodb", "s3", "sqs"} {
		if !strings.Contains(ls.Environment["SERVICES"], s) {
			t.Errorf("SERVICES %q lacks %s", ls.Environment["SERVICES"], s)
		}
	}
	if ls.Environment["AWS_DEFAULT_REGION"] != region {
		t.Errorf("AWS_DEFAULT_REGION %q, want %s (the region the script and README use)", ls.Environment["AWS_DEFAULT_REGION"], region)
	}
	if len(ls.Ports) != 1 || !strings.HasSuffix(ls.Ports[0], ":"+edgePort+":"+edgePort) {
		t.Errorf("ports %v, want LocalStack's %s", ls.Ports, edgePort)
	}
	if len(ls.Volumes) != 1 || !strings.HasPrefix(ls.Volumes[0], "./init/ready.d:/etc/localstack/init/ready.d") {
		t.Errorf("volumes %v, want ./init/ready.d mounted on /etc/localstack/init/ready.d", ls.Volumes)
	}
	if c.Networks["default"].Name != "cirrus-localstack" {
		t.Errorf("the default network must be named cirrus-localstack (README's sam local command uses it)")
	}
}
