// Package migrate keeps stored data in step with the code: the table holds
// its format version, and at start every process upgrades older data in
// place, step by step, before serving. A store written by a newer release
// is refused rather than misread.
//
// Several processes (Lambda cold starts) may migrate at once: steps must be
// idempotent, and the version only moves forward by conditional write.
package migrate

import (
	"context"
	"errors"
	"fmt"

	"github.com/cirrus-matrix/cirrus/core/fanout"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Step upgrades data to format To. Run must be idempotent: a crash after
// Run but before the version is recorded runs it again.
type Step struct {
	To   int64
	Name string
	Run  func(ctx context.Context, t table.Table) error
}

// Steps is the format history, oldest first. Append; never edit a released step.
var Steps = []Step{
	{To: 1, Name: "initial format: accounts, devices, tokens, UIA sessions", Run: func(context.Context, table.Table) error { return nil }},
	{To: 2, Name: "fan-out worker: cursor at the event stream head", Run: fanout.StartAtHead},
	{To: 3, Name: "user directory: index every local account", Run: BackfillUserDirectory},
}

// Current is the format this release writes.
func Current(steps []Step) int64 { return steps[len(steps)-1].To }

var formatKey = table.Key{PK: "meta", SK: "format"}

// Version returns the stored format (0 for a store that has none yet).
func Version(ctx context.Context, t table.Table) (int64, error) {
	it, err := t.Get(ctx, formatKey)
	if errors.Is(err, table.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return it.Version, nil
}

// Up runs every step newer than the stored format, recording each.
func Up(ctx context.Context, t table.Table, steps []Step) error {
	for i := 1; i < len(steps); i++ {
		if steps[i].To <= steps[i-1].To {
			return fmt.Errorf("migrate: steps out of order at %q", steps[i].Name)
		}
	}
	for {
		cur, err := Version(ctx, t)
		if err != nil {
			return fmt.Errorf("migrate: reading format: %w", err)
		}
		if latest := Current(steps); cur > latest {
			return fmt.Errorf("migrate: stored data has format %d, newer than this release's %d: upgrade Cirrus instead", cur, latest)
		}
		var next *Step
		for i := range steps {
			if steps[i].To > cur {
				next = &steps[i]
				break
			}
		}
		if next == nil {
			return nil
		}
		if err := next.Run(ctx, t); err != nil {
			return fmt.Errorf("migrate: step to format %d (%s): %w", next.To, next.Name, err)
		}
		cond := table.IfVersion(cur)
		if cur == 0 {
			cond = table.IfNotExists()
		}
		err = t.Put(ctx, table.Item{PK: formatKey.PK, SK: formatKey.SK, Version: next.To, Data: []byte(next.Name)}, cond)
		if err != nil && !errors.Is(err, table.ErrConditionFailed) {
			return fmt.Errorf("migrate: recording format %d: %w", next.To, err)
		}
		// On a condition failure another process moved the format on; re-read.
	}
}
