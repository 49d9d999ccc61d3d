package lab

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"sync"
	"time"
)

// SlownessEnv names how many times slower than a normal host this machine
// runs the lab: a VM under software emulation (the 6.1 kernel in CI) runs
// 20-30x slower. Every time limit of the lab (how long to wait for a
// daemon, a CLI run, a backend state) and the e2e tests' limits grow by it
// (Scale), so a slow machine waits longer where a normal one would; what
// the tests assert is the same. Unset, or anything below 1, is 1.
const SlownessEnv = "XDPLB_TEST_SLOWNESS"

// slowness is SlownessEnv as read once: the machine does not get faster.
var slowness = sync.OnceValue(func() float64 {
	f, err := parseSlowness(os.Getenv(SlownessEnv))
	if err != nil {
		fmt.Fprintf(os.Stderr, "lab: %s: %v: taken as 1\n", SlownessEnv, err)
	}
	return f
})

// parseSlowness reads a slowness factor: "" is 1, and it is held to 1-1000
// (a factor below 1 would shorten the limits a normal host needs).
func parseSlowness(s string) (float64, error) {
	if s == "" {
		return 1, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) {
		return 1, fmt.Errorf("%q is not a number", s)
	}
	return min(max(f, 1), 1000), nil
}

// Slowness is the factor of SlownessEnv, 1 to 1000.
func Slowness() float64 { return slowness() }

// Scale stretches a time limit by Slowness.
func Scale(d time.Duration) time.Duration {
	return time.Duration(float64(d) * Slowness())
}
