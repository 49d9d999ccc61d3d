package bench

// Order statistics of the per-packet cost section (packet.go).

import (
	"math"
	"slices"
)

// pktQuantile is the q-quantile of xs (0 <= q <= 1), interpolating
// between the two nearest samples; NaN for no samples.
func pktQuantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	pos := q * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(s)-1)
	return s[lo] + (pos-float64(lo))*(s[hi]-s[lo])
}

func pktMedian(xs []float64) float64 { return pktQuantile(xs, 0.5) }

// pktIQM is the mean of the middle half of xs (the interquartile mean). A
// single run's duration comes from the kernel in whole nanoseconds, so a
// median of such samples moves in 1 ns steps; the IQM is as robust to the
// outliers of a shared machine and resolves fractions of a nanosecond.
func pktIQM(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	lo, hi := len(s)/4, len(s)-len(s)/4
	sum := 0.0
	for _, x := range s[lo:hi] {
		sum += x
	}
	return sum / float64(hi-lo)
}
