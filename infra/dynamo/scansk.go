package dynamo

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/cirrus-matrix/cirrus/core/table"
)

var _ table.Scanner = (*Table)(nil)

// ScanSK implements table.Scanner with a consistent Scan filtered on the
// sort key (the filter saves transfer, not capacity: DynamoDB charges for
// every item it reads). It is counted as a Query in the table's Counters.
func (t *Table) ScanSK(ctx context.Context, sk, cursor string) (table.Page, error) {
	e := newExpr()
	filter := e.name(table.AttrSK) + " = " + e.value(str(sk))
	in := &dynamodb.ScanInput{
		TableName:                 &t.name,
		FilterExpression:          &filter,
		ExpressionAttributeNames:  e.names,
		ExpressionAttributeValues: e.values,
		ConsistentRead:            aws.Bool(true),
		ReturnConsumedCapacity:    types.ReturnConsumedCapacityTotal,
	}
	if cursor != "" {
		start, err := decodeScanCursor(cursor)
		if err != nil {
			return table.Page{}, err
		}
		in.ExclusiveStartKey = start
	}
	out, err := t.client.Scan(ctx, in)
	t.stats.record(OpQuery, err, capOf(out, func(o *dynamodb.ScanOutput) *types.ConsumedCapacity { return o.ConsumedCapacity })...)
	if err != nil {
		return table.Page{}, mapErr(err)
	}
	now := t.now().Unix()
	page := table.Page{Items: make([]table.Item, 0, len(out.Items))}
	for _, av := range out.Items {
		it, err := unmarshal(av)
		if err != nil {
			return table.Page{}, err
		}
		if it.SK != sk || it.Expired(now) {
			continue
		}
		page.Items = append(page.Items, it)
	}
	if len(out.LastEvaluatedKey) > 0 {
		if page.Next, err = encodeCursor(out.LastEvaluatedKey, false); err != nil {
			return table.Page{}, err
		}
	}
	return page, nil
}

// decodeScanCursor turns a ScanSK cursor (encodeCursor of the last
// evaluated primary key) back into an ExclusiveStartKey.
func decodeScanCursor(cursor string) (map[string]types.AttributeValue, error) {
	bad := fmt.Errorf("%w: bad scan cursor", table.ErrInvalid)
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil {
		return nil, bad
	}
	var c map[string]string
	if err := json.Unmarshal(b, &c); err != nil || c[table.AttrPK] == "" || len(c) != 2 {
		return nil, bad
	}
	if _, ok := c[table.AttrSK]; !ok {
		return nil, bad
	}
	return map[string]types.AttributeValue{table.AttrPK: str(c[table.AttrPK]), table.AttrSK: str(c[table.AttrSK])}, nil
}
