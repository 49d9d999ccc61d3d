package healthcheck

import "time"

// machine is the rise/fall state of one target. It changes state only after
// rise (or fall) consecutive results that disagree with it, so a backend
// whose results alternate never flaps when rise and fall are above 1.
type machine struct {
	rise, fall int
	up, known  bool
	run        int    // consecutive results that disagree with up
	reason     string // of the last result
	since      time.Time
}

// newMachine starts up (a backend already serving when the daemon starts:
// a restart must not stop forwarding) or down, pending its first rise.
func newMachine(rise, fall int, startUp bool, now time.Time) machine {
	return machine{rise: max(rise, 1), fall: max(fall, 1), up: startUp, since: now}
}

// observe feeds one probe result in; it reports whether up changed.
func (m *machine) observe(ok bool, reason string, at time.Time) bool {
	m.known = true
	m.reason = reason
	if ok == m.up {
		m.run = 0
		return false
	}
	m.run++
	need := m.fall
	if ok {
		need = m.rise
	}
	if m.run < need {
		return false
	}
	m.up, m.run, m.since = ok, 0, at
	return true
}

// retune takes new thresholds (the target's Spec changed) and keeps up and
// known; the run restarts because it counted results of the old Spec.
func (m *machine) retune(rise, fall int) {
	m.rise, m.fall, m.run = max(rise, 1), max(fall, 1), 0
}
