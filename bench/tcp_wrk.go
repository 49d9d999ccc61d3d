package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/xdplb/xdplb/internal/lab"
)

// wrkShape is one load shape: how wrk uses its connections.
type wrkShape struct {
	Name    string
	Headers []string // extra request headers
}

var (
	tcpShapeKeepAlive = wrkShape{Name: "keep-alive"}
	// The server closes after each response, so every request pays a
	// handshake and a teardown: the new-flow path of every load balancer.
	tcpShapeNewConn = wrkShape{Name: "new connection per request", Headers: []string{"Connection: close"}}

	// tcpShapes are the shapes the section measures, in this order.
	tcpShapes = []wrkShape{tcpShapeKeepAlive, tcpShapeNewConn}
)

// wrkLoad is how hard wrk pushes. One thread: on 2 cores, wrk's event loop
// takes one and nginx, the load balancer and softirq share the other; a
// second wrk thread would only fight them for the CPU. 32 connections keep
// every backend busy without queueing most of each request's time in wrk.
type wrkLoad struct {
	Threads, Conns int
	Duration       time.Duration
}

// wrkResult is what one wrk run measured.
type wrkResult struct {
	RPS      float64
	P50, P99 time.Duration
	Requests int64
	Errors   int64 // socket errors (connect, read, write, timeout) and non-2xx/3xx answers
}

// runWrk runs wrk from n against url and parses its report.
func runWrk(ctx context.Context, n *lab.Node, url string, load wrkLoad, shape wrkShape) (wrkResult, error) {
	args := []string{
		"-t", strconv.Itoa(load.Threads), "-c", strconv.Itoa(load.Conns),
		"-d", fmt.Sprintf("%ds", max(1, int(load.Duration.Round(time.Second)/time.Second))),
		"--timeout", "2s", "--latency",
	}
	for _, h := range shape.Headers {
		args = append(args, "-H", h)
	}
	args = append(args, url)
	// lab's Exec bounds a command to 30s: longer runs would be killed.
	if load.Duration > 20*time.Second {
		return wrkResult{}, fmt.Errorf("wrk run of %s exceeds the 20s bound", load.Duration)
	}
	out, err := n.Exec(ctx, "wrk", args...)
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %w", err)
	}
	r, err := parseWrk(out)
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %w; output:\n%s", strings.Join(args, " "), err, out)
	}
	return r, nil
}

// parseWrk reads wrk's (4.x) text report: the "Requests/sec:" line, the
// "Latency Distribution" percentiles (printed with --latency), the request
// count and the error lines. Every figure the benchmark needs must be there,
// else the output is not what we think it is and we say so.
func parseWrk(out string) (wrkResult, error) {
	var (
		r                     wrkResult
		haveRPS, haveP50      bool
		haveP99, haveRequests bool
		inDist                bool
	)
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		fields := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "Requests/sec:"):
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, "Requests/sec:")), 64)
			if err != nil {
				return r, fmt.Errorf("parse %q: %w", line, err)
			}
			r.RPS, haveRPS = v, true
		case line == "Latency Distribution":
			inDist = true
		case inDist && len(fields) == 2 && strings.HasSuffix(fields[0], "%"):
			d, err := parseWrkDuration(fields[1])
			if err != nil {
				return r, fmt.Errorf("parse %q: %w", line, err)
			}
			switch fields[0] {
			case "50%", "50.000%":
				r.P50, haveP50 = d, true
			case "99%", "99.000%":
				r.P99, haveP99 = d, true
			}
		case len(fields) >= 3 && fields[1] == "requests" && fields[2] == "in":
			inDist = false
			v, err := strconv.ParseInt(fields[0], 10, 64)
			if err != nil {
				return r, fmt.Errorf("parse %q: %w", line, err)
			}
			r.Requests, haveRequests = v, true
		case strings.HasPrefix(line, "Socket errors:"):
			// "Socket errors: connect 0, read 0, write 0, timeout 0"
			for _, part := range strings.Split(strings.TrimPrefix(line, "Socket errors:"), ",") {
				f := strings.Fields(part)
				if len(f) != 2 {
					return r, fmt.Errorf("parse %q", line)
				}
				v, err := strconv.ParseInt(f[1], 10, 64)
				if err != nil {
					return r, fmt.Errorf("parse %q: %w", line, err)
				}
				r.Errors += v
			}
		case strings.HasPrefix(line, "Non-2xx or 3xx responses:"):
			v, err := strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(line, "Non-2xx or 3xx responses:")), 10, 64)
			if err != nil {
				return r, fmt.Errorf("parse %q: %w", line, err)
			}
			r.Errors += v
		default:
			if inDist && !strings.HasSuffix(wrkFirst(fields), "%") {
				inDist = false
			}
		}
	}
	if err := sc.Err(); err != nil {
		return r, err
	}
	var missing []string
	for name, ok := range map[string]bool{"Requests/sec": haveRPS, "50% latency": haveP50, "99% latency": haveP99, "request count": haveRequests} {
		if !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return r, fmt.Errorf("no %s in wrk output (was it run with --latency?)", strings.Join(missing, ", "))
	}
	if r.Requests == 0 || r.RPS <= 0 {
		return r, errors.New("wrk completed no request")
	}
	return r, nil
}

func wrkFirst(f []string) string {
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// parseWrkDuration reads wrk's durations: a number and a unit of us, ms, s,
// m or h (wrk's own format, not Go's: "1.20ms", "345.12us", "2.00s", "1.00m").
func parseWrkDuration(s string) (time.Duration, error) {
	units := []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}, {"h", time.Hour}}
	for _, u := range units {
		num, ok := strings.CutSuffix(s, u.suffix)
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(num, 64)
		if err != nil || v < 0 {
			return 0, fmt.Errorf("bad duration %q", s)
		}
		return time.Duration(v * float64(u.unit)), nil
	}
	return 0, fmt.Errorf("bad duration %q: unknown unit", s)
}
