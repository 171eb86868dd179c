// Package testtable opens a fresh table on each storage engine for tests,
// so domain packages run their tests on both engines without starting a
// whole server.
package testtable

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/cirrus-matrix/cirrus/core/resources"
	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/infra/awstest"
	"github.com/cirrus-matrix/cirrus/infra/bolt"
	"github.com/cirrus-matrix/cirrus/infra/dynamo"
)

func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Engines names the table engines Open can open.
var Engines = []string{"bolt", "dynamo"}

// Open opens a fresh, empty table on engine ("bolt" in a temp dir, or
// "dynamo" on the DynamoDB stand-in), closed when the test ends. Domain
// packages use it to run their tests on both engines.
func Open(t testing.TB, engine string) table.Table {
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
