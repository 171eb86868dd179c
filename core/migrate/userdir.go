package migrate

import (
	"context"
	"errors"
	"strings"
	"sync"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/accounts"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// backfillWorkers bounds the accounts indexed at once by the user directory
// backfill (each costs one read and one transaction).
const backfillWorkers = 16

// BackfillUserDirectory writes the user directory entries
// (accounts.IndexDirectoryUser) of every account. The table keeps no list
// of accounts, so this one-off step scans it for account items, which
// needs an engine that implements table.Scanner (both do). Indexing an
// account twice is harmless, so a crashed or concurrent run is fine.
func BackfillUserDirectory(ctx context.Context, t table.Table) error {
	sc, ok := t.(table.Scanner)
	if !ok {
		return errors.New("the table engine cannot scan, which the user directory backfill needs")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	users := make(chan id.UserID)
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	for range backfillWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := range users {
				if err := accounts.IndexDirectoryUser(ctx, t, u); err != nil {
					fail(err)
				}
			}
		}()
	}
	cursor := ""
scan:
	for {
		page, err := sc.ScanSK(ctx, "account", cursor)
		if err != nil {
			fail(err)
			break
		}
		for _, it := range page.Items {
			u, ok := strings.CutPrefix(it.PK, "user#")
			if !ok {
				continue
			}
			select {
			case users <- id.UserID(u):
			case <-ctx.Done():
				break scan
			}
		}
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	close(users)
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return firstErr
}
