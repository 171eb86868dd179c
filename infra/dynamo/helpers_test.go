package dynamo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/cirrus-matrix/cirrus/core/resources"
	"github.com/cirrus-matrix/cirrus/infra/awstest"
)

// testClient returns a client for the DynamoDB stand-in, skipping (or, under
// CI, failing) the test when it is not running.
func testClient(t testing.TB) *dynamodb.Client {
	t.Helper()
	return dynamodb.NewFromConfig(awstest.Require(t, "DYNAMODB"))
}

// newTestTable creates a fresh table with a random name and deletes it when
// the test ends.
func newTestTable(t testing.TB, opts ...Option) (*Table, *dynamodb.Client) {
	t.Helper()
	client := testClient(t)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "cirrus-test-" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := EnsureTable(ctx, client, name, resources.Table); err != nil {
		t.Fatalf("EnsureTable: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := client.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: &name}); err != nil {
			t.Errorf("delete table %s: %v", name, err)
		}
	})
	return New(client, name, opts...), client
}
