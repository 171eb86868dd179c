package dynamo

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/cirrus-matrix/cirrus/core/table"
)

func str(s string) types.AttributeValue { return &types.AttributeValueMemberS{Value: s} }

func num(n int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}
}

func keyAttrs(k table.Key) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{table.AttrPK: str(k.PK), table.AttrSK: str(k.SK)}
}

// marshal converts an item to DynamoDB attributes, leaving out empty ones.
func marshal(it table.Item) map[string]types.AttributeValue {
	m := keyAttrs(it.Key())
	if it.GPK != "" {
		m[table.AttrGPK] = str(it.GPK)
		m[table.AttrGSK] = str(it.GSK)
	}
	if len(it.Data) > 0 {
		m[table.AttrData] = &types.AttributeValueMemberB{Value: it.Data}
	}
	if it.Num != 0 {
		m[table.AttrNum] = num(it.Num)
	}
	if it.Version != 0 {
		m[table.AttrVersion] = num(it.Version)
	}
	if it.TTL != 0 {
		m[table.AttrTTL] = num(it.TTL)
	}
	return m
}

// unmarshal converts DynamoDB attributes back to an item; attributes it does
// not know are ignored.
func unmarshal(m map[string]types.AttributeValue) (table.Item, error) {
	var it table.Item
	var err error
	getS := func(name string) string {
		if v, ok := m[name].(*types.AttributeValueMemberS); ok {
			return v.Value
		}
		if _, ok := m[name]; ok && err == nil {
			err = fmt.Errorf("dynamo: attribute %q is not a string", name)
		}
		return ""
	}
	getN := func(name string) int64 {
		av, ok := m[name]
		if !ok {
			return 0
		}
		v, ok := av.(*types.AttributeValueMemberN)
		if !ok {
			if err == nil {
				err = fmt.Errorf("dynamo: attribute %q is not a number", name)
			}
			return 0
		}
		n, perr := strconv.ParseInt(v.Value, 10, 64)
		if perr != nil && err == nil {
			err = fmt.Errorf("dynamo: attribute %q: %w", name, perr)
		}
		return n
	}
	it.PK = getS(table.AttrPK)
	it.SK = getS(table.AttrSK)
	it.GPK = getS(table.AttrGPK)
	it.GSK = getS(table.AttrGSK)
	if av, ok := m[table.AttrData]; ok {
		b, ok := av.(*types.AttributeValueMemberB)
		if !ok {
			return it, fmt.Errorf("dynamo: attribute %q is not binary", table.AttrData)
		}
		it.Data = b.Value
	}
	it.Num = getN(table.AttrNum)
	it.Version = getN(table.AttrVersion)
	it.TTL = getN(table.AttrTTL)
	return it, err
}

// A cursor is the URL-safe base64 of a JSON object holding the last
// evaluated key's string attributes (pk, sk and, for index queries, gpk, gsk).
func encodeCursor(key map[string]types.AttributeValue, index bool) (string, error) {
	names := []string{table.AttrPK, table.AttrSK}
	if index {
		names = append(names, table.AttrGPK, table.AttrGSK)
	}
	c := make(map[string]string, len(names))
	for _, n := range names {
		v, ok := key[n].(*types.AttributeValueMemberS)
		if !ok {
			return "", fmt.Errorf("dynamo: query position lacks string %q", n)
		}
		c[n] = v.Value
	}
	b, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// decodeCursor checks that the cursor belongs to a query of partition pk and
// returns it as an ExclusiveStartKey.
func decodeCursor(cursor, pk string, index bool) (map[string]types.AttributeValue, error) {
	bad := fmt.Errorf("%w: bad query cursor", table.ErrInvalid)
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil {
		return nil, bad
	}
	var c map[string]string
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, bad
	}
	names := []string{table.AttrPK, table.AttrSK}
	part := table.AttrPK
	if index {
		names = append(names, table.AttrGPK, table.AttrGSK)
		part = table.AttrGPK
	}
	if len(c) != len(names) || c[part] != pk {
		return nil, bad
	}
	key := make(map[string]types.AttributeValue, len(names))
	for _, n := range names {
		if c[n] == "" {
			return nil, bad
		}
		key[n] = str(c[n])
	}
	return key, nil
}

// expr collects the placeholder names and values of one request's expressions.
type expr struct {
	names  map[string]string
	values map[string]types.AttributeValue
}

func newExpr() *expr {
	return &expr{names: map[string]string{}, values: map[string]types.AttributeValue{}}
}

// name returns the placeholder for an attribute name ("ttl" is reserved, so
// every name goes through a placeholder).
func (e *expr) name(attr string) string {
	p := "#" + attr
	e.names[p] = attr
	return p
}

// value adds a value and returns its placeholder.
func (e *expr) value(v types.AttributeValue) string {
	p := ":v" + strconv.Itoa(len(e.values))
	e.values[p] = v
	return p
}

func (e *expr) namesOrNil() map[string]string {
	if len(e.names) == 0 {
		return nil
	}
	return e.names
}

func (e *expr) valuesOrNil() map[string]types.AttributeValue {
	if len(e.values) == 0 {
		return nil
	}
	return e.values
}

// expired is true when the item has a TTL at or before now. The zero check
// guards against a stored ttl of 0, which means "never" as in table.Item.
func (e *expr) expired(now int64) string {
	ttl := e.name(table.AttrTTL)
	return "(attribute_exists(" + ttl + ") AND " + ttl + " <> " + e.value(num(0)) +
		" AND " + ttl + " <= " + e.value(num(now)) + ")"
}

// notExpired is the negation of expired; it holds for a missing item too.
func (e *expr) notExpired(now int64) string {
	ttl := e.name(table.AttrTTL)
	return "(attribute_not_exists(" + ttl + ") OR " + ttl + " = " + e.value(num(0)) +
		" OR " + ttl + " > " + e.value(num(now)) + ")"
}

// cond translates a port condition, counting an expired item as missing. It
// returns nil for CondNone.
func (e *expr) cond(c table.Cond, now int64) *string {
	var s string
	switch c.Kind {
	case table.CondNone:
		return nil
	case table.CondNotExists:
		s = "attribute_not_exists(" + e.name(table.AttrPK) + ") OR " + e.expired(now)
	case table.CondExists:
		s = "attribute_exists(" + e.name(table.AttrPK) + ") AND " + e.notExpired(now)
	case table.CondVersion:
		v := e.name(table.AttrVersion)
		// Version 0 is stored as no attribute at all.
		ver := v + " = " + e.value(num(c.Version))
		if c.Version == 0 {
			ver = "(attribute_not_exists(" + v + ") OR " + ver + ")"
		}
		s = "attribute_exists(" + e.name(table.AttrPK) + ") AND " + e.notExpired(now) + " AND " + ver
	default:
		// ValidateTx does not look at unknown kinds; never let one pass.
		s = "attribute_not_exists(" + e.name(table.AttrPK) + ") AND attribute_exists(" + e.name(table.AttrPK) + ")"
	}
	return &s
}
