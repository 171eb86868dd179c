package search_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/core/search"
	"github.com/cirrus-matrix/cirrus/core/search/searchbench"
	"github.com/cirrus-matrix/cirrus/infra/bolt"
)

// BenchmarkSearch100k indexes 100,000 synthetic messages in 50 rooms on
// bbolt, then times the first page (10 results) of searches of known
// selectivity, for a user in every room and for one in 5 of them. Reported:
// ns/op (mean), p50-ms (median), postings/op (index items read).
//
//	go test -run '^$' -bench Search100k -benchtime 50x ./core/search
func BenchmarkSearch100k(b *testing.B) {
	ctx := context.Background()
	db, err := bolt.Open(filepath.Join(b.TempDir(), "search.db"), bolt.WithNoSync())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	start := time.Now()
	c, err := searchbench.Build(ctx, db.Table(), 100_000, 50, 1)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("indexed 100,000 messages in %s", time.Since(start).Round(time.Millisecond))
	for _, q := range c.Queries {
		for _, order := range []string{search.OrderRank, search.OrderRecent} {
			for _, rooms := range [][]string{nil, {"5 rooms"}} {
				rs, label := c.Rooms, "all 50 rooms"
				if rooms != nil {
					rs, label = c.Rooms[:5], rooms[0]
				}
				b.Run(q.Name+"/"+order+"/"+label, func(b *testing.B) {
					var ds []time.Duration
					var tm searchbench.Timing
					for b.Loop() {
						t0 := time.Now()
						if tm, err = c.Measure(ctx, rs, q, order, 1); err != nil {
							b.Fatal(err)
						}
						ds = append(ds, time.Since(t0))
					}
					b.ReportMetric(float64(median(ds).Microseconds())/1000, "p50-ms")
					b.ReportMetric(float64(tm.Reads), "postings/op")
					b.ReportMetric(float64(tm.Count), "count")
				})
			}
		}
	}
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}
