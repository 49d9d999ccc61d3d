package daemon

import (
	"fmt"
	"net"
)

// NotifySocketEnv names the environment variable in which systemd passes
// a Type=notify service the socket to tell its state on (sd_notify(3)).
const NotifySocketEnv = "NOTIFY_SOCKET"

// notify sends state ("READY=1", "STOPPING=1", lines of KEY=VALUE) to the
// service manager's socket, as sd_notify(3) does: one datagram on a unix
// socket, named by a path or, with a leading '@', in the abstract
// namespace. Without a socket (not run by systemd as Type=notify) it does
// nothing.
func notify(socket, state string) error {
	if socket == "" {
		return nil
	}
	if socket[0] != '/' && socket[0] != '@' {
		return fmt.Errorf("notify socket %q: want an absolute path or @name", socket)
	}
	// Go reads a leading '@' as the abstract namespace, as systemd means it.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify %s: %w", socket, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("notify %s: %w", socket, err)
	}
	return nil
}
