package stream

import "context"

// ReadEach reads the stream after *head in batches of batch entries,
// calling each on every entry and moving *head past what it read, until the
// stream is drained or, with budget > 0, at least budget entries were read
// (full then reports that the budget stopped it).
func (s *Stream) ReadEach(ctx context.Context, head *int64, batch, budget int, each func(Entry) error) (n int, full bool, err error) {
	for {
		entries, next, err := s.Read(ctx, *head, batch)
		if err != nil {
			return n, false, err
		}
		*head = next
		for _, e := range entries {
			if err := each(e); err != nil {
				return n, false, err
			}
		}
		n += len(entries)
		if len(entries) < batch {
			return n, false, nil
		}
		if budget > 0 && n >= budget {
			return n, true, nil
		}
	}
}
