package boltqueue

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
)

// record is a stored message. Layout: sentAt, visibleAt (unix ns), nonce
// (8 bytes each), receive count (4), then uvarint-prefixed id and group,
// then the body.
type record struct {
	sentAt    int64
	visibleAt int64
	nonce     uint64
	count     uint32
	id        string
	group     string
	body      []byte
}

const headerLen = 28

var errCorrupt = errors.New("boltqueue: corrupt record")

func (r *record) encode() []byte {
	b := make([]byte, headerLen, headerLen+2*binary.MaxVarintLen64+len(r.id)+len(r.group)+len(r.body))
	binary.BigEndian.PutUint64(b[0:], uint64(r.sentAt))
	binary.BigEndian.PutUint64(b[8:], uint64(r.visibleAt))
	binary.BigEndian.PutUint64(b[16:], r.nonce)
	binary.BigEndian.PutUint32(b[24:], r.count)
	b = binary.AppendUvarint(b, uint64(len(r.id)))
	b = append(b, r.id...)
	b = binary.AppendUvarint(b, uint64(len(r.group)))
	b = append(b, r.group...)
	return append(b, r.body...)
}

// decodeRecord parses b. The body aliases b, which bbolt only keeps valid
// for the transaction: clone it before keeping it longer.
func decodeRecord(b []byte) (record, error) {
	if len(b) < headerLen {
		return record{}, errCorrupt
	}
	r := record{
		sentAt:    int64(binary.BigEndian.Uint64(b[0:])),
		visibleAt: int64(binary.BigEndian.Uint64(b[8:])),
		nonce:     binary.BigEndian.Uint64(b[16:]),
		count:     binary.BigEndian.Uint32(b[24:]),
	}
	rest := b[headerLen:]
	var ok bool
	if r.id, rest, ok = readString(rest); !ok {
		return record{}, errCorrupt
	}
	if r.group, rest, ok = readString(rest); !ok {
		return record{}, errCorrupt
	}
	r.body = rest
	return r, nil
}

func readString(b []byte) (string, []byte, bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return "", nil, false
	}
	return string(b[k : k+int(n)]), b[k+int(n):], true
}

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, seq)
}

// A receipt is the message's sequence number and the nonce of the receive
// that handed it out, in hex.
func makeReceipt(seq, nonce uint64) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], seq)
	binary.BigEndian.PutUint64(b[8:], nonce)
	return hex.EncodeToString(b[:])
}

func parseReceipt(s string) (seq, nonce uint64, ok bool) {
	if len(s) != 32 {
		return 0, 0, false
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:]), true
}
