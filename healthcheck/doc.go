// Package healthcheck will hold the active probers (TCP, HTTP, UDP) and the
// rise/fall state machine that decide whether a backend takes new flows. It
// knows nothing of BPF. Until it lands (issue 3) every resolved backend with
// a non-zero weight counts as up, and the check settings given to `vip add`
// are validated and stored but not acted on.
package healthcheck
