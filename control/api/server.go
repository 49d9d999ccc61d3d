package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/reconcile"
	"github.com/xdplb/xdplb/control/state"
	"github.com/xdplb/xdplb/loader"

	"golang.org/x/sys/unix"
)

// DefaultSocketPath is where the daemon listens unless told otherwise.
const DefaultSocketPath = "/run/xdplb/xdplb.sock"

// maxBody bounds request bodies: a whole state of a thousand VIPs with a
// thousand backends each (about 40 bytes of JSON per backend) fits.
const maxBody = 64 << 20

// ErrDaemonRunning is returned when another daemon answers on the socket.
var ErrDaemonRunning = errors.New("another daemon is running")

// ErrHasFlows is why a VIP or backend that still has open flows is not
// deleted without force, nor a VIP's mode changed under them (409).
var ErrHasFlows = errors.New("open flows")

// hasFlowsError is an ErrHasFlows whose text is the message alone.
type hasFlowsError struct{ msg string }

func (e *hasFlowsError) Error() string { return e.msg }
func (e *hasFlowsError) Unwrap() error { return ErrHasFlows }

// Server is the daemon's HTTP+JSON API (routes in types.go).
type Server struct {
	Store      *state.Store
	Datapath   reconcile.Datapath
	Reconciler *reconcile.Reconciler // may be nil (no backend status, no wait); its Run must be running
	Version    string
	StartTime  time.Time
	Log        *slog.Logger
	// VIPAddrs, if set, vets the address of a VIP that is new to the
	// state (vip add, apply).
	VIPAddrs VIPAddressChecker
	// BGP, if set, is the BGP speaker `status` shows.
	BGP BGPSource

	zero baseline // what `stats --zero` took, subtracted by Stats
}

// BGPSource is the BGP speaker as the API shows it (control/bgp, which
// the daemon adapts): status and metrics read it on request.
type BGPSource interface {
	BGPStatus(ctx context.Context) (BGPStatus, error)
}

// VIPAddressChecker refuses VIP addresses that are not safe to take: a
// subnet's network or broadcast address, or an address of the LB host
// itself (model.ErrOwnAddress, which force overrides).
type VIPAddressChecker interface {
	CheckVIPAddress(addr netip.Addr) error
}

// Handler returns the API's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/vips", s.listVIPs)
	mux.HandleFunc("POST /v1/vips", s.addVIP)
	mux.HandleFunc("PATCH /v1/vips/{vip}", s.setVIP)
	mux.HandleFunc("DELETE /v1/vips/{vip}", s.deleteVIP)
	mux.HandleFunc("GET /v1/vips/{vip}/backends", s.listBackends)
	mux.HandleFunc("POST /v1/vips/{vip}/backends", s.addBackend)
	mux.HandleFunc("PATCH /v1/vips/{vip}/backends/{backend}", s.setBackend)
	mux.HandleFunc("DELETE /v1/vips/{vip}/backends/{backend}", s.deleteBackend)
	mux.HandleFunc("PATCH /v1/vips/{vip}/groups/{group}", s.setGroup)
	mux.HandleFunc("GET /v1/state", s.getState)
	mux.HandleFunc("PUT /v1/state", s.putState)
	mux.HandleFunc("GET /v1/stats", s.getStats)
	mux.HandleFunc("POST /v1/stats/zero", s.zeroStats)
	mux.HandleFunc("GET /v1/status", s.getStatus)
	mux.HandleFunc("GET /v1/conns", s.getConns)
	return mux
}

// ListenUnix prepares the API socket: its directory (0755), no stale socket
// (but ErrDaemonRunning if a daemon answers on it), mode 0600.
func ListenUnix(ctx context.Context, path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("socket dir: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		c, err := (&net.Dialer{}).DialContext(dctx, "unix", path)
		cancel()
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("%w on %s", ErrDaemonRunning, path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	// Created 0600 (umask 0177 for the bind), not chmodded afterwards: a
	// client must never find it open to all, even for a moment. The
	// umask is the process's; nothing else creates files while the
	// daemon starts.
	old := unix.Umask(0o177)
	ln, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	// We remove the file ourselves on shutdown; Close must not race that.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("socket mode: %w", err)
	}
	return ln, nil
}

// Serve serves the API on ln until ctx is done.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	return serveUntilDone(ctx, ln, s.Handler(), "api")
}

// serveUntilDone serves h on ln until ctx is done, then shuts down,
// giving open requests two seconds to finish. what names the server in
// the error.
func serveUntilDone(ctx context.Context, ln net.Listener, h http.Handler, what string) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	defer stop()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", what, err)
	}
	return nil
}

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// errorStatus maps the store's sentinel errors to HTTP statuses.
func errorStatus(err error) int {
	switch {
	case errors.Is(err, model.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, model.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, model.ErrExists), errors.Is(err, ErrHasFlows):
		return http.StatusConflict
	default:
		return http.StatusInternalServerError
	}
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := errorStatus(err)
	if code == http.StatusInternalServerError {
		s.log().Error("api request", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	msg := strings.ReplaceAll(err.Error(), "\n", "; ")
	writeJSON(w, code, APIError{Error: msg})
}

// decode reads one JSON value, refusing unknown fields, trailing data and
// bodies over maxBody; errors wrap ErrInvalid.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: request body: %v", model.ErrInvalid, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: request body: trailing data", model.ErrInvalid)
	}
	return nil
}

func pathVIP(r *http.Request) (model.VIPID, error) {
	id, err := model.ParseVIPID(r.PathValue("vip"))
	if err != nil {
		return model.VIPID{}, fmt.Errorf("%w: %v", model.ErrInvalid, err)
	}
	return id, nil
}

func pathBackend(r *http.Request) (model.VIPID, netip.Addr, uint16, error) {
	id, err := pathVIP(r)
	if err != nil {
		return model.VIPID{}, netip.Addr{}, 0, err
	}
	addr, port, err := model.ParseBackendAddr(r.PathValue("backend"))
	if err != nil {
		return model.VIPID{}, netip.Addr{}, 0, fmt.Errorf("%w: %v", model.ErrInvalid, err)
	}
	return id, addr, port, nil
}

// applied runs a reconcile after a change, so the data plane matches when
// the CLI returns. The change is stored either way; a failure here is
// logged and retried by the reconcile loop.
func (s *Server) applied(r *http.Request) {
	if s.Reconciler == nil {
		return
	}
	// The reconciler's loop applies the change; the answer waits for it,
	// so that the maps hold the change when the CLI returns.
	start := time.Now()
	if err := s.Reconciler.Wait(r.Context(), s.Store.Generation()); err != nil {
		s.log().Error("reconcile after api change", "err", err)
	}
	s.log().Debug("api change applied", "took", time.Since(start))
}

func (s *Server) listVIPs(w http.ResponseWriter, r *http.Request) {
	vips := s.Store.State().VIPs
	flows, err := s.Datapath.FlowCountsByBackend()
	if err != nil {
		s.fail(w, r, fmt.Errorf("count flows: %w", err))
		return
	}
	out := make([]VIPStatus, 0, len(vips))
	for _, v := range vips {
		out = append(out, s.vipStatus(v, flows))
	}
	writeJSON(w, http.StatusOK, out)
}

// vipStatus is v with its backends' and fallback's status.
func (s *Server) vipStatus(v model.VIP, flows map[uint32]loader.FlowCount) VIPStatus {
	id := v.ID()
	var snat netip.Addr
	if s.Reconciler != nil {
		snat, _ = s.Reconciler.SNATAddr(id)
	}
	vs := VIPStatus{VIP: v, Backends: make([]BackendStatus, 0, len(v.Backends))}
	vs.VIP.Backends, vs.VIP.Fallback = nil, nil // shadowed by the statuses
	add := func(bs BackendStatus) BackendStatus {
		bs.Mode, bs.SNATAddr = v.Mode, snat
		vs.Flows += bs.Flows
		vs.HalfOpen += bs.HalfOpen
		return bs
	}
	for _, b := range v.Backends {
		vs.Backends = append(vs.Backends, add(s.backendStatus(id, b, flows)))
	}
	if v.Fallback != nil {
		fb := add(s.fallbackStatus(id, *v.Fallback, flows))
		vs.Fallback = &fb
	}
	if s.Reconciler != nil {
		if pools, ok := s.Reconciler.ActivePools(id); ok {
			prio := model.ActivePriority(pools)
			vs.ActivePools, vs.ActivePriority = pools, &prio
		}
	}
	return vs
}

func (s *Server) addVIP(w http.ResponseWriter, r *http.Request) {
	var v model.VIP
	err := decode(w, r, &v)
	force := false
	if err == nil {
		force, err = forceParam(r)
	}
	if err == nil {
		err = s.checkNewVIPAddrs([]model.VIP{v}, force)
	}
	if err == nil {
		err = s.Store.AddVIP(v)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log().Info("vip added by api", "vip", v.ID(), "force", force)
	s.applied(r)
	w.WriteHeader(http.StatusCreated)
}

// setVIP changes a VIP's options. A change of its mode, or of a fullnat
// VIP's SNAT address, breaks its open flows (their packets would be
// forwarded or translated otherwise than the backend and client expect):
// refused while it has any, unless ?force=true.
func (s *Server) setVIP(w http.ResponseWriter, r *http.Request) {
	id, err := pathVIP(r)
	force := false
	if err == nil {
		force, err = forceParam(r)
	}
	var p model.VIPPatch
	if err == nil {
		err = decode(w, r, &p)
	}
	if err == nil && !force {
		err = s.checkPatchKeepsFlows(id, p)
	}
	if err == nil {
		err = s.Store.SetVIP(id, p)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log().Info("vip changed by api", "vip", id, "force", force)
	s.applied(r)
	w.WriteHeader(http.StatusNoContent)
}

// checkPatchKeepsFlows returns an ErrHasFlows error when p changes the
// mode of VIP id, or the SNAT address its fullnat flows were translated
// with, while it has open flows; or removes or replaces its fallback
// while the fallback has open flows (they would be placed again, as a
// deleted backend's are). Every other option leaves them as they are: the
// VIP keeps its id, its backends their ids and entries.
func (s *Server) checkPatchKeepsFlows(id model.VIPID, p model.VIPPatch) error {
	if s.Reconciler == nil || p.Mode == nil && p.SNATAddr == nil && p.Fallback == nil {
		return nil
	}
	cur, err := s.Store.VIP(id)
	if err != nil {
		return err
	}
	next := cur.Clone()
	if err := p.Apply(&next); err != nil {
		return err
	}
	model.NormalizeVIP(&next)
	var what string
	affected := &cur // whose flows break
	switch snat, _ := s.Reconciler.SNATAddr(id); {
	case next.Mode != cur.Mode:
		what = fmt.Sprintf("changing its mode from %s to %s", cur.Mode, next.Mode)
	case next.Mode == model.ModeFullNAT && next.SNATAddr != cur.SNATAddr && (!next.SNATAddr.IsValid() || next.SNATAddr != snat):
		what = "changing its SNAT address"
	case cur.Fallback != nil && (next.Fallback == nil || *next.Fallback != *cur.Fallback):
		what = fmt.Sprintf("removing its fallback %s", cur.Fallback)
		if next.Fallback != nil {
			what = fmt.Sprintf("replacing its fallback %s", cur.Fallback)
		}
		affected = &model.VIP{Address: cur.Address, Port: cur.Port, Protocol: cur.Protocol, Fallback: cur.Fallback}
	default:
		return nil
	}
	c, err := s.vipFlows(affected)
	if err != nil || c.Open() == 0 {
		return err
	}
	return &hasFlowsError{fmt.Sprintf("vip %s: %s breaks its %s: wait for them to end, or use --force", id, what, openFlows(c))}
}

// vipFlows counts the open flows of v's backends and fallback.
func (s *Server) vipFlows(v *model.VIP) (loader.FlowCount, error) {
	id := v.ID()
	var bids []uint32
	for _, b := range v.Backends {
		if bi, ok := s.Reconciler.Backend(id, b.Address, b.Port); ok && bi.ID != 0 {
			bids = append(bids, bi.ID)
		}
	}
	if fi, ok := s.Reconciler.Fallback(id); v.Fallback != nil && ok && fi.ID != 0 {
		bids = append(bids, fi.ID)
	}
	var sum loader.FlowCount
	if len(bids) == 0 {
		return sum, nil // never written to the data plane: no flows
	}
	flows, err := s.Datapath.FlowCountsByBackend()
	if err != nil {
		return sum, fmt.Errorf("count flows: %w", err)
	}
	for _, bid := range bids {
		sum.Established += flows[bid].Established
		sum.HalfOpen += flows[bid].HalfOpen
	}
	return sum, nil
}

// deleteVIP refuses, unless ?force=true, to delete a VIP whose backends
// still have open flows, as deleteBackend does: its clients would be
// reset (their packets pass to the kernel, which has no such socket).
func (s *Server) deleteVIP(w http.ResponseWriter, r *http.Request) {
	id, err := pathVIP(r)
	force := false
	if err == nil {
		force, err = forceParam(r)
	}
	if err == nil && !force {
		err = s.checkVIPNoFlows(id)
	}
	if err == nil {
		err = s.Store.DeleteVIP(id)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log().Info("vip deleted by api", "vip", id, "force", force)
	s.applied(r)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) listBackends(w http.ResponseWriter, r *http.Request) {
	id, err := pathVIP(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	v, err := s.Store.VIP(id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	flows, err := s.Datapath.FlowCountsByBackend()
	if err != nil {
		s.fail(w, r, fmt.Errorf("count flows: %w", err))
		return
	}
	var snat netip.Addr
	if s.Reconciler != nil {
		snat, _ = s.Reconciler.SNATAddr(id)
	}
	out := make([]BackendStatus, 0, len(v.Backends)+1)
	for _, b := range v.Backends {
		bs := s.backendStatus(id, b, flows)
		bs.Mode, bs.SNATAddr = v.Mode, snat
		out = append(out, bs)
	}
	if v.Fallback != nil {
		bs := s.fallbackStatus(id, *v.Fallback, flows)
		bs.Mode, bs.SNATAddr = v.Mode, snat
		out = append(out, bs)
	}
	if s.Reconciler != nil {
		for _, rb := range s.Reconciler.Retained(id) {
			st := model.BackendDraining
			if rb.Serving {
				st = model.BackendUp
			}
			bs := BackendStatus{Backend: model.Backend{Address: rb.Addr, Port: rb.Port}, Removed: true, State: st,
				Flows: flows[rb.ID].Established, HalfOpen: flows[rb.ID].HalfOpen, Mode: v.Mode, SNATAddr: snat}
			out = append(out, bs)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// fallbackStatus is the status of a VIP's fallback server: it has no
// weight and no check.
func (s *Server) fallbackStatus(id model.VIPID, f model.Fallback, flows map[uint32]loader.FlowCount) BackendStatus {
	bs := BackendStatus{Backend: model.Backend{Address: f.Address, Port: f.Port}, Fallback: true, State: model.BackendUnresolved}
	if s.Reconciler == nil {
		return bs
	}
	if fi, ok := s.Reconciler.Fallback(id); ok {
		bs.State, bs.Iface, bs.Reason = fi.State, fi.Iface, fi.Reason
		if fi.MAC != nil {
			bs.MAC = fi.MAC.String()
		}
		if fi.ID != 0 {
			bs.Flows, bs.HalfOpen = flows[fi.ID].Established, flows[fi.ID].HalfOpen
		}
	}
	return bs
}

func (s *Server) backendStatus(id model.VIPID, b model.Backend, flows map[uint32]loader.FlowCount) BackendStatus {
	bs := BackendStatus{Backend: b, State: model.BackendUnresolved}
	if b.Weight == 0 || b.Drain {
		bs.State = model.BackendDraining
	}
	if s.Reconciler == nil {
		return bs
	}
	if bi, ok := s.Reconciler.Backend(id, b.Address, b.Port); ok {
		bs.State, bs.MAC, bs.Iface, bs.Reason = bi.State, bi.MAC.String(), bi.Iface, bi.Reason
		if bi.ID != 0 {
			bs.Flows, bs.HalfOpen = flows[bi.ID].Established, flows[bi.ID].HalfOpen
		}
	}
	if hs, ok := s.Reconciler.HealthStatus(id, b); ok {
		bs.Check = "pending" // no probe has answered yet
		if hs.Known {
			bs.Check = hs.Reason
		}
		if !hs.Since.IsZero() {
			bs.CheckSince = hs.Since
		}
	}
	return bs
}

func (s *Server) addBackend(w http.ResponseWriter, r *http.Request) {
	id, err := pathVIP(r)
	// Weight 0 means "no new flows", so an absent weight must not read as 0.
	var req struct {
		model.Backend
		Weight *uint32 `json:"weight"`
	}
	if err == nil {
		err = decode(w, r, &req)
	}
	b := req.Backend
	b.Weight = model.DefaultWeight
	if req.Weight != nil {
		b.Weight = *req.Weight
	}
	if err == nil {
		err = s.Store.AddBackend(id, b)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log().Info("backend added by api", "vip", id, "backend", b.Address)
	s.applied(r)
	w.WriteHeader(http.StatusCreated)
}

func (s *Server) setBackend(w http.ResponseWriter, r *http.Request) {
	id, addr, port, err := pathBackend(r)
	var p model.BackendPatch
	if err == nil {
		err = decode(w, r, &p)
	}
	if err == nil {
		err = s.Store.SetBackend(id, addr, port, p)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log().Info("backend changed by api", "vip", id, "backend", addr)
	s.applied(r)
	w.WriteHeader(http.StatusNoContent)
}

// setGroup changes every backend of a group of a VIP at once.
func (s *Server) setGroup(w http.ResponseWriter, r *http.Request) {
	id, err := pathVIP(r)
	g := r.PathValue("group")
	var p model.BackendPatch
	if err == nil {
		err = decode(w, r, &p)
	}
	if err == nil {
		err = s.Store.SetGroup(id, g, p)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log().Info("backend group changed by api", "vip", id, "group", g)
	s.applied(r)
	w.WriteHeader(http.StatusNoContent)
}

// deleteBackend refuses, unless ?force=true, to delete a backend that
// still has open flows: they would be placed again on another backend and
// broken. The operator drains it first and waits for FLOWS to reach 0.
func (s *Server) deleteBackend(w http.ResponseWriter, r *http.Request) {
	id, addr, port, err := pathBackend(r)
	force := false
	if err == nil {
		force, err = forceParam(r)
	}
	if err == nil && !force {
		err = s.checkNoFlows(id, addr, port)
	}
	if err == nil && force && s.Reconciler != nil {
		p := port
		if p == id.Port {
			p = 0
		}
		s.Reconciler.Release(id, addr, p) // its open flows break, as asked
	}
	if err == nil {
		err = s.Store.DeleteBackend(id, addr, port)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log().Info("backend deleted by api", "vip", id, "backend", addr, "force", force)
	s.applied(r)
	w.WriteHeader(http.StatusNoContent)
}

// checkNewVIPAddrs vets the address of every VIP of vips whose address no
// VIP of the state has yet (one taken already was vetted, or forced, when
// it came). force lets an address of this host through.
func (s *Server) checkNewVIPAddrs(vips []model.VIP, force bool) error {
	if s.VIPAddrs == nil {
		return nil
	}
	taken := map[netip.Addr]bool{}
	for _, v := range s.Store.State().VIPs {
		taken[v.Address.Unmap()] = true
	}
	for _, v := range vips {
		a := v.Address.Unmap()
		if taken[a] {
			continue
		}
		err := s.VIPAddrs.CheckVIPAddress(a)
		if err != nil && !(force && errors.Is(err, model.ErrOwnAddress)) {
			return model.AsInvalid(fmt.Errorf("vip %s: %w", v.ID(), err))
		}
		taken[a] = true
	}
	return nil
}

// forceParam is the request's ?force=, false when absent.
func forceParam(r *http.Request) (bool, error) {
	f := r.URL.Query().Get("force")
	if f == "" {
		return false, nil
	}
	force, err := strconv.ParseBool(f)
	if err != nil {
		return false, fmt.Errorf("%w: force=%q: want true or false", model.ErrInvalid, f)
	}
	return force, nil
}

// checkVIPNoFlows returns an ErrHasFlows error when any backend of the VIP,
// or its fallback, has open flows in the connection table.
func (s *Server) checkVIPNoFlows(id model.VIPID) error {
	if s.Reconciler == nil {
		return nil
	}
	v, err := s.Store.VIP(id)
	if err != nil {
		return err
	}
	sum, err := s.vipFlows(&v)
	if err != nil {
		return err
	}
	if sum.Open() > 0 {
		return &hasFlowsError{fmt.Sprintf("vip %s still has %s: drain its backends and wait, or use --force", id, openFlows(sum))}
	}
	return nil
}

// checkNoFlows returns an ErrHasFlows error when the backend has open
// flows in the connection table.
func (s *Server) checkNoFlows(id model.VIPID, addr netip.Addr, port uint16) error {
	if s.Reconciler == nil {
		return nil
	}
	if port == id.Port {
		port = 0 // the same backend, as the store names it
	}
	bi, ok := s.Reconciler.Backend(id, addr, port)
	if !ok || bi.ID == 0 {
		return nil // never written to the data plane: no flows
	}
	flows, err := s.Datapath.FlowCountsByBackend()
	if err != nil {
		return fmt.Errorf("count flows: %w", err)
	}
	if c := flows[bi.ID]; c.Open() > 0 {
		return &hasFlowsError{fmt.Sprintf("vip %s: backend %s still has %s: drain it and wait, or use --force",
			id, model.BackendName(addr.Unmap(), port), openFlows(c))}
	}
	return nil
}

func (s *Server) getState(w http.ResponseWriter, r *http.Request) {
	st := s.Store.State()
	if st.VIPs == nil {
		st.VIPs = []model.VIP{}
	}
	writeJSON(w, http.StatusOK, st)
}

// putState replaces the desired state (apply); with ?dry_run=true it
// checks the state as an apply would and answers what it would change
// (model.StateDiff), changing nothing.
func (s *Server) putState(w http.ResponseWriter, r *http.Request) {
	dryRun := false
	if f := r.URL.Query().Get("dry_run"); f != "" {
		var err error
		if dryRun, err = strconv.ParseBool(f); err != nil {
			s.fail(w, r, fmt.Errorf("%w: dry_run=%q: want true or false", model.ErrInvalid, f))
			return
		}
	}
	var st model.State
	err := decode(w, r, &st)
	force := false
	if err == nil {
		force, err = forceParam(r)
	}
	if err == nil {
		err = s.checkNewVIPAddrs(st.VIPs, force)
	}
	if err == nil && dryRun {
		next, cur, err := s.Store.CheckReplace(st)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, model.DiffStates(cur, next))
		return
	}
	if err == nil {
		err = s.Store.Replace(st)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log().Info("state applied by api", "vips", len(st.VIPs))
	s.applied(r)
	w.WriteHeader(http.StatusNoContent)
}

// Stats assembles the counters of every configured VIP and backend, since
// the last ZeroStats.
func (s *Server) Stats() (Stats, error) {
	st, _ := s.Store.Snapshot()
	out, err := snapshot(s.Datapath, st, IfaceName)
	return s.zero.apply(out), err
}

// ZeroStats makes Stats count from now, as `ipvsadm -Z` does, without
// touching the counters in the maps: the metrics keep growing. A read that
// fails zeroes nothing, rather than part.
func (s *Server) ZeroStats() error {
	st, _ := s.Store.Snapshot()
	out, err := snapshot(s.Datapath, st, IfaceName)
	if err != nil {
		return err
	}
	s.zero.set(out)
	return nil
}

func (s *Server) zeroStats(w http.ResponseWriter, r *http.Request) {
	if err := s.ZeroStats(); err != nil {
		s.fail(w, r, err)
		return
	}
	s.log().Info("stats zeroed by api")
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) getStats(w http.ResponseWriter, r *http.Request) {
	st, err := s.Stats()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) getStatus(w http.ResponseWriter, r *http.Request) {
	ds, err := s.Datapath.Status()
	if err != nil {
		s.fail(w, r, fmt.Errorf("data plane status: %w", err))
		return
	}
	state := s.Store.State()
	out := DaemonStatus{
		Version:    s.Version,
		StartTime:  s.StartTime,
		Uptime:     time.Since(s.StartTime).Truncate(time.Second).String(),
		PinPath:    ds.PinPath,
		Kernel:     kernelInfo(ds.Features),
		Interfaces: []IfaceInfo{},
		Maps:       []MapInfo{},
		VIPs:       len(state.VIPs),
		Schedulers: map[string]int{},
	}
	for _, v := range state.VIPs {
		out.Backends += len(v.Backends)
		sched := v.Scheduler
		if sched == "" {
			sched = model.DefaultScheduler
		}
		out.Schedulers[string(sched)]++
	}
	for _, i := range ds.Interfaces {
		out.Interfaces = append(out.Interfaces, IfaceInfo{Name: i.Name, Ifindex: i.Ifindex, XDPMode: string(i.Mode),
			ProgramID: i.ProgramID, LinkID: i.LinkID})
	}
	for _, m := range ds.Maps {
		out.Maps = append(out.Maps, MapInfo{Name: m.Name, Entries: m.Entries, MaxEntries: m.MaxEntries, Bytes: m.Bytes})
	}
	if s.BGP != nil {
		bs, err := s.BGP.BGPStatus(r.Context())
		if err != nil {
			s.fail(w, r, fmt.Errorf("bgp status: %w", err))
			return
		}
		out.BGP = &bs
	}
	writeJSON(w, http.StatusOK, out)
}

// kernelInfo is what the data plane found in the kernel, on the wire.
func kernelInfo(f loader.Features) KernelInfo {
	return KernelInfo{Release: f.Kernel, BTF: f.BTF, ElemCount: f.ElemCount, Count: f.CountMethod(),
		BatchLookup: f.BatchLookup, BatchUpdateTables: f.BatchUpdateTables, Mmapable: f.Mmapable}
}

// openFlows words a count of open flows for an operator: "3 open flows (2
// established, 1 half-open)". Half-open ones end on their own within the
// daemon's --half-open-timeout.
func openFlows(c loader.FlowCount) string {
	return fmt.Sprintf("%d open flows (%d established, %d half-open)", c.Open(), c.Established, c.HalfOpen)
}
