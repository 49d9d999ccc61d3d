// Command xdplb is the XDP load balancer: the daemon and the CLI that talks
// to it over a unix socket.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time: -ldflags "-X main.version=...".
var version = "dev"

func main() {
	// `xdplb demo | head` must not kill the demo before it cleans up: a
	// closed stdout becomes a write error instead of a fatal signal.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
