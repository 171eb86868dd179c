package ephemeral

import (
	"context"
	"encoding/json"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// ReadSeqs returns, for each thread id asked ("" for unthreaded receipts,
// ThreadMain for the main timeline, or a thread root), the room sequence
// u's read receipts (public or private) of that thread reach: one GetMany.
// Threads without a receipt are absent. For per-thread unread counts.
func (s *Service) ReadSeqs(ctx context.Context, u id.UserID, room id.RoomID, threads []string) (map[string]int64, error) {
	out := map[string]int64{}
	if len(threads) == 0 {
		return out, nil
	}
	var keys []table.Key
	for _, th := range threads {
		for _, typ := range []string{ReceiptRead, ReceiptReadPrivate} {
			keys = append(keys, receiptKey(room, typ, th, u))
		}
	}
	for start := 0; start < len(keys); start += table.MaxBatchGet {
		items, err := s.T.GetMany(ctx, keys[start:min(start+table.MaxBatchGet, len(keys))])
		if err != nil {
			return nil, err
		}
		for _, it := range items {
			var rc Receipt
			if err := json.Unmarshal(it.Data, &rc); err != nil {
				return nil, err
			}
			if cur, ok := out[rc.ThreadID]; !ok || rc.Seq > cur {
				out[rc.ThreadID] = rc.Seq
			}
		}
	}
	return out, nil
}
