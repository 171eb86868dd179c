package testenv

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/cirrus-matrix/cirrus/core/resources"
	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/infra/awstest"
	"github.com/cirrus-matrix/cirrus/infra/bolt"
	"github.com/cirrus-matrix/cirrus/infra/dynamo"
)

// TableEngines names the table engines Table can open.
var TableEngines = []string{"bolt", "dynamo"}

// Table opens a fresh, empty table on engine ("bolt" in a temp dir, or
// "dynamo" on the DynamoDB stand-in), closed when the test ends. Domain
// packages use it to run their tests on both engines.
func Table(t testing.TB, engine string) table.Table {
	t.Helper()
	switch engine {
	case "bolt":
		db, err := bolt.Open(filepath.Join(t.TempDir(), "cirrus.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db.Table()
	case "dynamo":
		cfg := awstest.Require(t, "DYNAMODB")
		client := dynamodb.NewFromConfig(cfg)
		name := "cirrus-unit-" + randomSuffix()
		ctx := context.Background()
		if err := dynamo.EnsureTable(ctx, client, name, resources.Table); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_, _ = client.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: &name})
		})
		return dynamo.New(client, name)
	}
	t.Fatalf("unknown table engine %q", engine)
	return nil
}
