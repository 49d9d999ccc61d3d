package bench

import (
	"strings"
	"testing"
	"time"
)

// wrk 4.1's report with --latency, as printed on this machine.
const wrkSample = `Running 10s test @ http://10.200.0.11:80/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   412.35us  120.50us   8.12ms   91.02%
    Req/Sec    77.31k     3.20k   81.02k    80.00%
  Latency Distribution
     50%  390.00us
     75%  450.12us
     90%  520.40us
     99%    1.02ms
  769321 requests in 10.00s, 185.17MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 1
Requests/sec:  76925.12
Transfer/sec:     18.52MB
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkSample)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{RPS: 76925.12, P50: 390 * time.Microsecond, P99: 1020 * time.Microsecond, Requests: 769321, Errors: 6}
	if r != want {
		t.Errorf("got %+v, want %+v", r, want)
	}
}

func TestParseWrkRejects(t *testing.T) {
	for name, out := range map[string]string{
		"empty":         "",
		"no latency":    strings.Replace(wrkSample, "  Latency Distribution\n", "", 1),
		"no rps":        strings.Replace(wrkSample, "Requests/sec:  76925.12\n", "", 1),
		"bad rps":       strings.Replace(wrkSample, "76925.12", "lots", 1),
		"bad unit":      strings.Replace(wrkSample, "1.02ms", "1.02parsecs", 1),
		"zero requests": strings.Replace(strings.Replace(wrkSample, "769321 requests", "0 requests", 1), "76925.12", "0.00", 1),
		"usage":         "Usage: wrk <options> <url>\n  Options:\n",
	} {
		if _, err := parseWrk(out); err == nil {
			t.Errorf("%s: parsed without error", name)
		}
	}
}

func TestParseWrkDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"345.12us": 345120 * time.Nanosecond,
		"1.20ms":   1200 * time.Microsecond,
		"2.00s":    2 * time.Second,
		"1.50m":    90 * time.Second,
	} {
		got, err := parseWrkDuration(in)
		if err != nil || got != want {
			t.Errorf("%s: got %v, %v; want %v", in, got, err, want)
		}
	}
}

func TestTCPRoundRatio(t *testing.T) {
	// Round by round 2, 1 and 4: the median is 2; rounds beyond the
	// shorter series and zero divisors are left out.
	if got := tcpRoundRatio([]float64{2, 3, 8, 5}, []float64{1, 3, 2}); got != 2 {
		t.Fatalf("ratio %v, want 2", got)
	}
	if got := tcpRoundRatio([]float64{1}, []float64{0}); got != 0 {
		t.Fatalf("ratio over zero %v, want 0 (none)", got)
	}
}
