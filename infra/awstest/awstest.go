// Package awstest gives tests an aws.Config pointed at the local stand-ins
// that `make test` starts (scripts/standins). Outside CI a test whose stand-in
// is not running is skipped; under CI (CI=true) it fails, so a broken setup
// can never pass silently.
package awstest

import (
	"context"
	"os"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// Require returns a config for the stand-ins, or skips/fails the test when the
// endpoint variable for service (e.g. "DYNAMODB", "SQS") is not set.
func Require(t testing.TB, service string) aws.Config {
	t.Helper()
	env := "AWS_ENDPOINT_URL_" + service
	if os.Getenv(env) == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not set under CI: run the tests through `make test`, which starts the stand-ins", env)
		}
		t.Skipf("%s not set: run `make test` to start the local stand-ins", env)
	}
	cfg, err := config.LoadDefaultConfig(context.Background(),
		config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("test", "test", "")),
	)
	if err != nil {
		t.Fatalf("aws config: %v", err)
	}
	return cfg
}
