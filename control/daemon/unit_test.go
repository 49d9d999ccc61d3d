package daemon

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// The systemd unit matches what the daemon does: Type=notify (it sends
// READY=1), reload by SIGHUP; and it has no option that gives the service
// a mount namespace of its own, where a bpffs the daemon mounts, and the
// pins that keep forwarding across a restart, would go with the service.
func TestSystemdUnit(t *testing.T) {
	b, err := os.ReadFile("../../dist/systemd/xdplb.service.in")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	for _, want := range []string{
		"Type=notify",
		"ExecStart=@BINDIR@/xdplb daemon $XDPLB_OPTS",
		"EnvironmentFile=-@SYSCONFDIR@/default/xdplb",
		"ExecReload=/bin/kill -HUP $MAINPID",
		"Restart=on-failure",
		"NoNewPrivileges=yes",
	} {
		if !slices.Contains(lines, want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	for _, l := range lines {
		key, _, _ := strings.Cut(l, "=")
		switch key {
		case "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateMounts", "ProtectKernelModules",
			"ProtectKernelTunables", "ProtectControlGroups", "ProtectKernelLogs", "ProtectProc", "ReadOnlyPaths",
			"ReadWritePaths", "InaccessiblePaths", "TemporaryFileSystem", "BindPaths", "BindReadOnlyPaths", "RootDirectory", "RootImage":
			t.Errorf("unit has %q: a mount namespace of its own", l)
		}
	}
}
