package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/cirrus-matrix/cirrus/core/search"
	"github.com/cirrus-matrix/cirrus/core/search/searchbench"
	"github.com/cirrus-matrix/cirrus/infra/bolt"
)

// searchResult is the server-side search measurement: an index of
// synthetic messages on the embedded engine, and the time of a search's
// first page (10 results) for queries of known selectivity.
type searchResult struct {
	Messages     int                  `json:"messages"`
	Rooms        int                  `json:"rooms"`
	BuildSeconds float64              `json:"build_seconds"`
	Runs         int                  `json:"runs_per_query"`
	Queries      []searchbench.Timing `json:"queries"`
	// MedianP50 is the median over the queries of their median time.
	MedianP50 float64 `json:"median_p50_ms"`
}

// runSearch builds the index (bbolt, no fsync: the build is setup, not
// what is measured) and times every query for a user in every room and
// for one in a tenth of them, in both orders.
func runSearch(ctx context.Context, work string, messages, runs int) (*searchResult, error) {
	db, err := bolt.Open(filepath.Join(work, "search.db"), bolt.WithNoSync())
	if err != nil {
		return nil, err
	}
	defer db.Close()
	const rooms = 50
	start := time.Now()
	c, err := searchbench.Build(ctx, db.Table(), messages, rooms, 1)
	if err != nil {
		return nil, err
	}
	res := &searchResult{Messages: messages, Rooms: rooms, BuildSeconds: time.Since(start).Seconds(), Runs: runs}
	var p50s []float64
	for _, q := range c.Queries {
		for _, order := range []string{search.OrderRank, search.OrderRecent} {
			for _, n := range []int{rooms, rooms / 10} {
				tm, err := c.Measure(ctx, c.Rooms[:n], q, order, runs)
				if err != nil {
					return nil, fmt.Errorf("search %q: %w", q.Name, err)
				}
				res.Queries = append(res.Queries, tm)
				p50s = append(p50s, tm.P50)
			}
		}
	}
	res.MedianP50 = Median(p50s)
	return res, nil
}

func printSearch(row func(cols ...string), r *searchResult) {
	row(fmt.Sprintf("SEARCH (%d messages in %d rooms, bbolt; index built in %.1f s; first page of 10, %d runs)", r.Messages, r.Rooms, r.BuildSeconds, r.Runs), "p50 / p90", "postings read, count")
	for _, q := range r.Queries {
		row(fmt.Sprintf("  %s, %s, user in %d rooms", q.Query, q.Order, q.Rooms), fmt.Sprintf("%.2f / %.2f ms", q.P50, q.P90), fmt.Sprintf("%d, %d", q.Reads, q.Count))
	}
	row("  median of the medians", fmt.Sprintf("%.2f ms", r.MedianP50), "")
	row("", "", "")
}
