package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"github.com/xdplb/xdplb/control/model"
)

// Client talks to the daemon's API on its unix socket; the CLI is its only
// user. Errors carry the daemon's one-line message as is.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for the daemon listening on socketPath.
func NewClient(socketPath string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socketPath)
		},
		DisableCompression: true,
	}
	return &Client{socket: socketPath, hc: &http.Client{Transport: tr}}
}

// do sends in (if not nil) as JSON and decodes the answer into out (if not
// nil).
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.send(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	return nil
}

// send sends in (if not nil) as JSON and returns a successful answer,
// whose body the caller closes; a failed one is its error.
func (c *Client) send(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://xdplb"+path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("daemon not reachable on %s: %w", c.socket, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		var ae APIError
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		if json.Unmarshal(b, &ae) == nil && ae.Error != "" {
			return nil, errors.New(strings.TrimSpace(ae.Error))
		}
		return nil, fmt.Errorf("daemon: %s", resp.Status)
	}
	return resp, nil
}

func vipPath(id model.VIPID) string { return "/v1/vips/" + url.PathEscape(id.String()) }

func backendPath(id model.VIPID, addr netip.Addr, port uint16) string {
	b := addr.String()
	if port != 0 {
		b = netip.AddrPortFrom(addr, port).String()
	}
	return vipPath(id) + "/backends/" + url.PathEscape(b)
}

// VIPs lists the configured VIPs with their backends' status.
func (c *Client) VIPs(ctx context.Context) ([]VIPStatus, error) {
	var out []VIPStatus
	return out, c.do(ctx, http.MethodGet, "/v1/vips", nil, &out)
}

// SetVIP changes the options of a VIP. Without force the daemon refuses
// (409, ErrHasFlows in the message) a change of mode, or of a fullnat
// VIP's SNAT address, while the VIP has open flows: they would break.
func (c *Client) SetVIP(ctx context.Context, id model.VIPID, p model.VIPPatch, force bool) error {
	path := vipPath(id)
	if force {
		path += "?force=true"
	}
	return c.do(ctx, http.MethodPatch, path, p, nil)
}

// AddVIP adds a VIP; force takes an address of the LB host (model.ErrOwnAddress).
func (c *Client) AddVIP(ctx context.Context, v model.VIP, force bool) error {
	p := "/v1/vips"
	if force {
		p += "?force=true"
	}
	return c.do(ctx, http.MethodPost, p, v, nil)
}

// DeleteVIP deletes a VIP and its backends. Without force the daemon
// refuses (409, ErrHasFlows) while its backends have open flows.
func (c *Client) DeleteVIP(ctx context.Context, id model.VIPID, force bool) error {
	p := vipPath(id)
	if force {
		p += "?force=true"
	}
	return c.do(ctx, http.MethodDelete, p, nil, nil)
}

// Backends lists a VIP's backends with their state.
func (c *Client) Backends(ctx context.Context, id model.VIPID) ([]BackendStatus, error) {
	var out []BackendStatus
	return out, c.do(ctx, http.MethodGet, vipPath(id)+"/backends", nil, &out)
}

// AddBackend adds a backend to a VIP.
func (c *Client) AddBackend(ctx context.Context, id model.VIPID, b model.Backend) error {
	return c.do(ctx, http.MethodPost, vipPath(id)+"/backends", b, nil)
}

// SetBackend changes a backend's weight or drain flag.
func (c *Client) SetBackend(ctx context.Context, id model.VIPID, addr netip.Addr, port uint16, p model.BackendPatch) error {
	return c.do(ctx, http.MethodPatch, backendPath(id, addr, port), p, nil)
}

// SetGroup makes the change p on every backend of group g of a VIP, at
// once.
func (c *Client) SetGroup(ctx context.Context, id model.VIPID, g string, p model.BackendPatch) error {
	return c.do(ctx, http.MethodPatch, vipPath(id)+"/groups/"+url.PathEscape(g), p, nil)
}

// DeleteBackend removes a backend from a VIP. Without force the daemon
// refuses (409, ErrHasFlows in the message) while the backend has open flows.
func (c *Client) DeleteBackend(ctx context.Context, id model.VIPID, addr netip.Addr, port uint16, force bool) error {
	p := backendPath(id, addr, port)
	if force {
		p += "?force=true"
	}
	return c.do(ctx, http.MethodDelete, p, nil, nil)
}

// State returns the whole desired state.
func (c *Client) State(ctx context.Context) (model.State, error) {
	var out model.State
	return out, c.do(ctx, http.MethodGet, "/v1/state", nil, &out)
}

// Apply replaces the whole desired state; force lets a new VIP take an
// address of the LB host.
func (c *Client) Apply(ctx context.Context, st model.State, force bool) error {
	p := "/v1/state"
	if force {
		p += "?force=true"
	}
	return c.do(ctx, http.MethodPut, p, st, nil)
}

// DryRun checks st as Apply would and returns what it would change,
// changing nothing.
func (c *Client) DryRun(ctx context.Context, st model.State, force bool) (model.StateDiff, error) {
	var out model.StateDiff
	p := "/v1/state?dry_run=true"
	if force {
		p += "&force=true"
	}
	return out, c.do(ctx, http.MethodPut, p, st, &out)
}

// Stats returns the counters.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var out Stats
	return out, c.do(ctx, http.MethodGet, "/v1/stats", nil, &out)
}

// ZeroStats makes Stats count from now; the metrics are not reset.
func (c *Client) ZeroStats(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/v1/stats/zero", nil, nil)
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (DaemonStatus, error) {
	var out DaemonStatus
	return out, c.do(ctx, http.MethodGet, "/v1/status", nil, &out)
}

// Conns streams the connection table, filtered: fn gets each entry as it
// arrives (an error from fn ends the stream and is returned), and the end
// says how many matched and were left out. A stream cut short is an error.
func (c *Client) Conns(ctx context.Context, f ConnsFilter, fn func(Conn) error) (ConnsEnd, error) {
	resp, err := c.send(ctx, http.MethodGet, "/v1/conns?"+f.query(), nil)
	if err != nil {
		return ConnsEnd{}, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var line ConnsLine
		if err := dec.Decode(&line); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return ConnsEnd{}, fmt.Errorf("read connections: %w", err)
		}
		switch {
		case line.End != nil:
			if line.End.Error != "" {
				return *line.End, errors.New(line.End.Error)
			}
			return *line.End, nil
		case line.Conn != nil:
			if err := fn(*line.Conn); err != nil {
				return ConnsEnd{}, err
			}
		}
	}
}

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }
