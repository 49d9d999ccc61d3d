package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/xdplb/xdplb/internal/lab"
)

// tcpNginxConf is a minimal nginx.conf: one worker, no access log, port 80
// (direct, DR: DR cannot change the port) and tcpBackendPort (the NAT-like
// paths: VIP port 80 to the backends' 8080), every path
// nginx writes (pid, error log, temp files) inside the backend's own
// directory, and a static page naming the backend. Keep-alive connections
// are never closed by nginx after some number of requests (its default is
// 1,000), so the keep-alive shape measures only keep-alive requests.
const tcpNginxConf = `worker_processes 1;
daemon off;
pid {{DIR}}/nginx.pid;
error_log {{DIR}}/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path {{DIR}}/tmp/body;
    proxy_temp_path {{DIR}}/tmp/proxy;
    fastcgi_temp_path {{DIR}}/tmp/fastcgi;
    uwsgi_temp_path {{DIR}}/tmp/uwsgi;
    scgi_temp_path {{DIR}}/tmp/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 60s;
    server {
        listen 80 backlog=4096;
        listen [::]:80 backlog=4096;
        listen {{NATPORT}} backlog=4096;
        root {{DIR}}/www;
        index index.html;
    }
}
`

// tcpStartNginx writes a configuration for be under dir and starts nginx in
// be's namespace, waiting until it answers with be's name.
func tcpStartNginx(ctx context.Context, be *lab.Node, dir string) (*lab.Process, error) {
	dir = filepath.Join(dir, "nginx-"+be.Name)
	for _, d := range []string{"tmp", "www"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("nginx dir: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "www", "index.html"), []byte(be.Name+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("nginx page: %w", err)
	}
	conf := filepath.Join(dir, "nginx.conf")
	text := strings.NewReplacer("{{DIR}}", dir, "{{NATPORT}}", fmt.Sprint(tcpBackendPort)).Replace(tcpNginxConf)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return nil, fmt.Errorf("nginx conf: %w", err)
	}
	// -e: the error log before the configuration is read; Debian's
	// compiled-in default would be outside dir.
	p, err := be.StartProcess(lab.ProcessOptions{LogPath: filepath.Join(dir, "stderr.log")},
		"nginx", "-c", conf, "-p", dir, "-e", filepath.Join(dir, "error.log"))
	if err != nil {
		return nil, err
	}
	self := netip.AddrPortFrom(be.IPv4, lab.HTTPPort)
	if err := tcpWaitServes(ctx, be, self, func(name string) bool { return name == be.Name }, p); err != nil {
		return nil, errors.Join(err, p.Stop())
	}
	return p, nil
}

// tcpWaitServes waits until an HTTP GET from n to target gets an answer that
// ok accepts (the server runs, and listens where we think), or p exits.
func tcpWaitServes(ctx context.Context, n *lab.Node, target netip.AddrPort, ok func(string) bool, p *lab.Process) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var last error
	for {
		got, err := n.Get(ctx, target, time.Second)
		if err == nil && ok(got) {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("unexpected answer %q", got)
		}
		last = err
		select {
		case <-p.Done():
			return fmt.Errorf("%s in %s exited:\n%s", p.Name, n.NetNS, p.LogTail(10))
		case <-ctx.Done():
			return fmt.Errorf("%s in %s does not answer on %s: %w; log:\n%s", p.Name, n.NetNS, target, last, p.LogTail(10))
		case <-time.After(50 * time.Millisecond):
		}
	}
}
