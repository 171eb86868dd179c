package bolt

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// On-disk layout. Three buckets live in the file (other adapters may add
// their own buckets next to them):
//
//	items: part(PK) SK                      -> value (see encodeValue)
//	index: part(GPK) esc(GSK) 00 01 part(PK) SK -> empty
//	ttl:   be64(TTL ^ signbit) part(PK) SK  -> empty
//
// part(s) is uvarint(len(s)) followed by s. Because the length comes first,
// no partition's keys can start with another partition's prefix, and inside
// one partition the sort key is the plain tail of the bbolt key, so bbolt's
// bytewise key order is exactly the sort-key order. In the index the GSK is
// followed by the primary key (to make entries unique), so it is escaped
// (00 -> 00 FF) and terminated by 00 01, which keeps bytewise order and makes
// the end of the GSK unambiguous.
var (
	bucketItems = []byte("table")
	bucketIndex = []byte("table.gsi1")
	bucketTTL   = []byte("table.ttl")
)

// formatV1 is the first byte of every stored value.
const formatV1 = 1

var errCorrupt = errors.New("bolt: corrupt record")

// appendPart appends uvarint(len(s)) and s.
func appendPart(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// partPrefix is the common prefix of all keys of one partition.
func partPrefix(pk string) []byte {
	return appendPart(make([]byte, 0, len(pk)+2), pk)
}

// itemKey is the items-bucket key of k.
func itemKey(k table.Key) []byte {
	b := make([]byte, 0, len(k.PK)+len(k.SK)+2)
	return append(appendPart(b, k.PK), k.SK...)
}

// splitItemKey reverses itemKey.
func splitItemKey(b []byte) (table.Key, error) {
	n, w := binary.Uvarint(b)
	if w <= 0 || uint64(len(b)-w) < n {
		return table.Key{}, errCorrupt
	}
	return table.Key{PK: string(b[w : w+int(n)]), SK: string(b[w+int(n):])}, nil
}

// appendEscaped appends s with every 00 byte written as 00 FF.
func appendEscaped(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		b = append(b, s[i])
		if s[i] == 0 {
			b = append(b, 0xff)
		}
	}
	return b
}

// indexKey is the index-bucket key of the item stored at ikey (an
// items-bucket key) with index key (gpk, gsk).
func indexKey(gpk, gsk string, ikey []byte) []byte {
	b := make([]byte, 0, len(gpk)+len(gsk)+len(ikey)+8)
	b = appendPart(b, gpk)
	b = appendEscaped(b, gsk)
	b = append(b, 0, 1)
	return append(b, ikey...)
}

// splitIndexTail splits what follows part(GPK) in an index key into the GSK
// and the items-bucket key.
func splitIndexTail(b []byte) (gsk string, ikey []byte, err error) {
	var out []byte
	for i := 0; i < len(b); i++ {
		if b[i] != 0 {
			continue
		}
		if i+1 >= len(b) {
			return "", nil, errCorrupt
		}
		switch b[i+1] {
		case 0xff:
			out = append(out, b[:i+1]...)
			b = b[i+2:]
			i = -1
		case 1:
			out = append(out, b[:i]...)
			return string(out), b[i+2:], nil
		default:
			return "", nil, errCorrupt
		}
	}
	return "", nil, errCorrupt
}

// ttlKey is the ttl-bucket key of an item expiring at ttl.
func ttlKey(ttl int64, ikey []byte) []byte {
	b := make([]byte, 8, 8+len(ikey))
	binary.BigEndian.PutUint64(b, uint64(ttl)^(1<<63))
	return append(b, ikey...)
}

func ttlOf(tkey []byte) int64 {
	return int64(binary.BigEndian.Uint64(tkey[:8]) ^ (1 << 63))
}

// encodeValue serializes the non-key attributes of it:
//
//	formatV1 part(GPK) part(GSK) varint(Num) varint(Version) varint(TTL) Data
func encodeValue(it *table.Item) []byte {
	n := 1 + len(it.GPK) + len(it.GSK) + 2*binary.MaxVarintLen16 + 3*binary.MaxVarintLen64 + len(it.Data)
	b := make([]byte, 0, n)
	b = append(b, formatV1)
	b = appendPart(b, it.GPK)
	b = appendPart(b, it.GSK)
	b = binary.AppendVarint(b, it.Num)
	b = binary.AppendVarint(b, it.Version)
	b = binary.AppendVarint(b, it.TTL)
	return append(b, it.Data...)
}

// record is a decoded value whose Data still points into bbolt's memory;
// it is valid only inside the transaction that read it.
type record struct {
	gpk, gsk          string
	num, version, ttl int64
	data              []byte
}

func decodeValue(v []byte) (record, error) {
	var r record
	if len(v) == 0 || v[0] != formatV1 {
		return r, fmt.Errorf("%w: unknown format", errCorrupt)
	}
	v = v[1:]
	var ok bool
	if r.gpk, v, ok = readPart(v); !ok {
		return r, errCorrupt
	}
	if r.gsk, v, ok = readPart(v); !ok {
		return r, errCorrupt
	}
	for _, dst := range []*int64{&r.num, &r.version, &r.ttl} {
		x, w := binary.Varint(v)
		if w <= 0 {
			return r, errCorrupt
		}
		*dst, v = x, v[w:]
	}
	r.data = v
	return r, nil
}

func readPart(b []byte) (string, []byte, bool) {
	n, w := binary.Uvarint(b)
	if w <= 0 || uint64(len(b)-w) < n {
		return "", nil, false
	}
	end := w + int(n)
	return string(b[w:end]), b[end:], true
}

// item builds a caller-owned Item from a record, copying Data.
func (r *record) item(k table.Key) table.Item {
	it := table.Item{PK: k.PK, SK: k.SK, GPK: r.gpk, GSK: r.gsk, Num: r.num, Version: r.version, TTL: r.ttl}
	if len(r.data) > 0 {
		it.Data = append([]byte(nil), r.data...)
	}
	return it
}

func (r *record) expired(now int64) bool { return r.ttl != 0 && r.ttl <= now }
