package dynamo

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"

	"github.com/cirrus-matrix/cirrus/core/resources"
)

// EnsureTable creates the table name as spec describes (on-demand billing,
// string keys, the one index projecting all attributes, TTL on spec.TTLAttr)
// unless it exists, and waits until it and its index are active. An existing
// table must have spec's key schema. Enabling TTL is skipped if the endpoint
// does not support it. It is meant for local stand-ins and tests; on AWS the
// deployment template creates the table.
func EnsureTable(ctx context.Context, client *dynamodb.Client, name string, spec resources.TableSpec) error {
	desc, err := client.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: &name})
	var nf *types.ResourceNotFoundException
	switch {
	case err == nil:
		if err := checkSchema(desc.Table, spec); err != nil {
			return fmt.Errorf("dynamo: table %s: %w", name, err)
		}
	case errors.As(err, &nf):
		if err := createTable(ctx, client, name, spec); err != nil {
			return err
		}
	default:
		return fmt.Errorf("dynamo: describe table %s: %w", name, err)
	}
	if err := waitActive(ctx, client, name); err != nil {
		return err
	}
	return enableTTL(ctx, client, name, spec.TTLAttr)
}

func createTable(ctx context.Context, client *dynamodb.Client, name string, spec resources.TableSpec) error {
	attr := func(n string) types.AttributeDefinition {
		return types.AttributeDefinition{AttributeName: aws.String(n), AttributeType: types.ScalarAttributeTypeS}
	}
	keys := func(pk, sk string) []types.KeySchemaElement {
		return []types.KeySchemaElement{
			{AttributeName: aws.String(pk), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String(sk), KeyType: types.KeyTypeRange},
		}
	}
	_, err := client.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:   &name,
		BillingMode: types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{
			attr(spec.PK), attr(spec.SK), attr(spec.IndexPK), attr(spec.IndexSK),
		},
		KeySchema: keys(spec.PK, spec.SK),
		GlobalSecondaryIndexes: []types.GlobalSecondaryIndex{{
			IndexName:  aws.String(spec.Index),
			KeySchema:  keys(spec.IndexPK, spec.IndexSK),
			Projection: &types.Projection{ProjectionType: types.ProjectionTypeAll},
		}},
	})
	var inUse *types.ResourceInUseException
	if err != nil && !errors.As(err, &inUse) { // in use: someone else created it meanwhile
		return fmt.Errorf("dynamo: create table %s: %w", name, err)
	}
	return nil
}

// checkSchema verifies an existing table's keys and index against spec.
func checkSchema(d *types.TableDescription, spec resources.TableSpec) error {
	match := func(ks []types.KeySchemaElement, pk, sk string) bool {
		var h, r string
		for _, k := range ks {
			switch k.KeyType {
			case types.KeyTypeHash:
				h = aws.ToString(k.AttributeName)
			case types.KeyTypeRange:
				r = aws.ToString(k.AttributeName)
			}
		}
		return h == pk && r == sk
	}
	if d == nil || !match(d.KeySchema, spec.PK, spec.SK) {
		return fmt.Errorf("key schema is not (%s, %s)", spec.PK, spec.SK)
	}
	for _, g := range d.GlobalSecondaryIndexes {
		if aws.ToString(g.IndexName) == spec.Index {
			if !match(g.KeySchema, spec.IndexPK, spec.IndexSK) {
				return fmt.Errorf("index %s is not keyed by (%s, %s)", spec.Index, spec.IndexPK, spec.IndexSK)
			}
			return nil
		}
	}
	return fmt.Errorf("index %s is missing", spec.Index)
}

// waitActive polls until the table and all its indexes are ACTIVE.
func waitActive(ctx context.Context, client *dynamodb.Client, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	delay := 50 * time.Millisecond
	for {
		out, err := client.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: &name})
		var nf *types.ResourceNotFoundException
		if err != nil && !errors.As(err, &nf) {
			return fmt.Errorf("dynamo: wait for table %s: %w", name, err)
		}
		if err == nil && out.Table != nil && out.Table.TableStatus == types.TableStatusActive {
			ready := true
			for _, g := range out.Table.GlobalSecondaryIndexes {
				if g.IndexStatus != "" && g.IndexStatus != types.IndexStatusActive {
					ready = false
				}
			}
			if ready {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("dynamo: wait for table %s: %w", name, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(delay*2, 2*time.Second)
	}
}

// enableTTL turns on expiry by attr unless it is already on. Endpoints that
// do not implement the TTL calls are tolerated: the adapter filters expired
// items on read either way.
func enableTTL(ctx context.Context, client *dynamodb.Client, name, attr string) error {
	if attr == "" {
		return nil
	}
	d, err := client.DescribeTimeToLive(ctx, &dynamodb.DescribeTimeToLiveInput{TableName: &name})
	if err == nil && d.TimeToLiveDescription != nil {
		st := d.TimeToLiveDescription.TimeToLiveStatus
		if (st == types.TimeToLiveStatusEnabled || st == types.TimeToLiveStatusEnabling) &&
			aws.ToString(d.TimeToLiveDescription.AttributeName) == attr {
			return nil
		}
	}
	_, err = client.UpdateTimeToLive(ctx, &dynamodb.UpdateTimeToLiveInput{
		TableName: &name,
		TimeToLiveSpecification: &types.TimeToLiveSpecification{
			AttributeName: aws.String(attr),
			Enabled:       aws.Bool(true),
		},
	})
	if err == nil || unsupported(err) {
		return nil
	}
	var api smithy.APIError
	if errors.As(err, &api) && strings.Contains(strings.ToLower(api.ErrorMessage()), "already enabled") {
		return nil
	}
	return fmt.Errorf("dynamo: enable TTL on %s: %w", name, err)
}

func unsupported(err error) bool {
	var api smithy.APIError
	if !errors.As(err, &api) {
		return false
	}
	switch api.ErrorCode() {
	case "UnknownOperationException", "UnknownOperation", "NotImplemented", "InvalidAction":
		return true
	}
	return false
}
