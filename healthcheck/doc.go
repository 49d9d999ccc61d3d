// Package healthcheck decides whether a backend takes new flows by probing
// it actively: a TCP connect, an HTTP GET or a UDP request and reply.
//
// A Manager runs one probe loop per distinct Spec, however many targets
// (VIP and backend pairs) share it, so 1,000 VIPs in front of the same ten
// servers cost ten probes per interval, not 10,000. Each loop starts at a
// random offset inside its interval and jitters every round by up to ±10%,
// so that thousands of loops do not fire together. A probe is bounded by its
// Spec's timeout and runs in its own loop's goroutine: a slow backend delays
// only its own next probe.
//
// Each target keeps its own rise/fall state machine (a backend known when the
// daemon starts begins up and needs Fall failures to go down; one added later
// begins down and needs Rise successes), and every transition is reported
// once, through Options.OnTransition, the Changes signal and one log line.
//
// The package knows nothing of BPF; time comes from an injected Clock so
// that the state machine and the scheduler are tested with a FakeClock,
// without sleeping.
package healthcheck
