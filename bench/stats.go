package main

import (
	"math"
	"slices"
	"time"
)

// Percentile returns the p-th percentile (0 < p ≤ 100) of xs by the
// nearest-rank method: the smallest value with at least p% of the samples at
// or below it. It returns 0 for no samples. xs is not modified.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return percentileSorted(s, p)
}

func percentileSorted(s []float64, p float64) float64 {
	if len(s) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	rank = max(1, min(rank, len(s)))
	return s[rank-1]
}

// Median is the middle value (the mean of the two middle values for an even
// count), 0 for no samples.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Dist summarises a set of latency samples, in milliseconds.
type Dist struct {
	N   int     `json:"n"`
	Min float64 `json:"min_ms"`
	P50 float64 `json:"p50_ms"`
	P95 float64 `json:"p95_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

// Summarize computes a Dist from samples.
func Summarize(samples []time.Duration) Dist {
	if len(samples) == 0 {
		return Dist{}
	}
	ms := make([]float64, len(samples))
	for i, d := range samples {
		ms[i] = float64(d) / float64(time.Millisecond)
	}
	slices.Sort(ms)
	return Dist{N: len(ms), Min: ms[0], P50: percentileSorted(ms, 50), P95: percentileSorted(ms, 95),
		P99: percentileSorted(ms, 99), Max: ms[len(ms)-1]}
}

// MedianDist is the field-by-field median of several runs' distributions
// (what BENCHMARKS.md quotes: the machines are shared and noisy).
func MedianDist(ds []Dist) Dist {
	if len(ds) == 0 {
		return Dist{}
	}
	pick := func(f func(Dist) float64) float64 {
		xs := make([]float64, len(ds))
		for i, d := range ds {
			xs[i] = f(d)
		}
		return Median(xs)
	}
	return Dist{
		N:   int(pick(func(d Dist) float64 { return float64(d.N) })),
		Min: pick(func(d Dist) float64 { return d.Min }),
		P50: pick(func(d Dist) float64 { return d.P50 }),
		P95: pick(func(d Dist) float64 { return d.P95 }),
		P99: pick(func(d Dist) float64 { return d.P99 }),
		Max: pick(func(d Dist) float64 { return d.Max }),
	}
}
