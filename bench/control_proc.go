package bench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ctlClockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat; it
// is 100 on every Linux architecture Go supports.
const ctlClockTicks = 100

// ctlFindPID finds the process whose command line contains every one of words
// (the daemon runs under `ip netns exec`, which execs into it, so the pid
// is that of the xdplb process itself once it runs).
func ctlFindPID(words ...string) (int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0})
		if len(args) == 0 || string(args[0]) == "ip" {
			continue
		}
		all := true
		for _, w := range words {
			if !bytes.Contains(b, []byte(w)) {
				all = false
				break
			}
		}
		if all {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no xdplb process with %q", words)
}

// ctlProcRSS returns VmRSS and the part of it that maps BPF maps (only
// mmapable maps are mapped; their pages are map memory, not the daemon's).
func ctlProcRSS(pid int) (rss, mappedMaps uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			rss, err = ctlParseKB(v)
			if err != nil {
				return 0, 0, err
			}
		}
	}
	sm, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return 0, 0, err
	}
	inMap := false
	for _, l := range strings.Split(string(sm), "\n") {
		f := strings.Fields(l)
		if len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			inMap = strings.Contains(l, "bpf-map") // a mapping header line
			continue
		}
		if v, ok := strings.CutPrefix(l, "Rss:"); ok && inMap {
			kb, err := ctlParseKB(v)
			if err != nil {
				return 0, 0, err
			}
			mappedMaps += kb
		}
	}
	return rss, mappedMaps, nil
}

func ctlParseKB(v string) (uint64, error) {
	v = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %q: %w", v, err)
	}
	return n * 1024, nil
}

// ctlProcCPU returns the user and system CPU time the process has used.
func ctlProcCPU(pid int) (user, sys time.Duration, err error) {
	return ctlStatCPU(fmt.Sprintf("/proc/%d/stat", pid))
}

// ctlStatCPU reads utime and stime from a /proc stat file (a process's or
// a thread's).
func ctlStatCPU(path string) (user, sys time.Duration, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	// The command name may hold spaces; fields start after its ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("parse %s", path)
	}
	f := strings.Fields(string(b[i+1:]))
	// After ')': state(3) ... utime is field 14, stime 15 (1-based) -> 11, 12 here.
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("parse %s: %d fields", path, len(f))
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("parse %s times", path)
	}
	tick := time.Second / ctlClockTicks
	return time.Duration(u) * tick, time.Duration(s) * tick, nil
}
