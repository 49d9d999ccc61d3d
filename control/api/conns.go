package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/reconcile"
	"github.com/xdplb/xdplb/loader"
)

// connsFlushEvery is how many lines of GET /v1/conns are sent at once.
const connsFlushEvery = 64

// DefaultConnsLimit is how many entries GET /v1/conns (and `xdplb conns`)
// sends unless told otherwise.
const DefaultConnsLimit = 1000

// query is f as the query string of GET /v1/conns.
func (f ConnsFilter) query() string {
	q := url.Values{}
	if f.VIP != nil {
		q.Set("vip", f.VIP.String())
	}
	if f.Backend.IsValid() {
		q.Set("backend", backendKey(f.Backend, f.BackendPort))
	}
	q.Set("limit", strconv.Itoa(f.Limit))
	return q.Encode()
}

// backendKey writes a backend as the CLI takes it: ADDR or ADDR:PORT.
func backendKey(a netip.Addr, port uint16) string {
	if port == 0 {
		return a.String()
	}
	return netip.AddrPortFrom(a, port).String()
}

// parseConnsFilter reads and checks GET /v1/conns's query against the
// desired state: a VIP or backend that is not configured is ErrNotFound,
// so that a typo does not read as "no connections".
func parseConnsFilter(q url.Values, st model.State) (ConnsFilter, error) {
	f := ConnsFilter{Limit: DefaultConnsLimit}
	if s := q.Get("vip"); s != "" {
		id, err := model.ParseVIPID(s)
		if err != nil {
			return f, fmt.Errorf("%w: %v", model.ErrInvalid, err)
		}
		id = id.Canonical()
		f.VIP = &id
	}
	if s := q.Get("backend"); s != "" {
		addr, port, err := model.ParseBackendAddr(s)
		if err != nil {
			return f, fmt.Errorf("%w: %v", model.ErrInvalid, err)
		}
		f.Backend, f.BackendPort = addr.Unmap(), port
	}
	if q.Has("limit") {
		s := q.Get("limit")
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return f, fmt.Errorf("%w: limit %q: want a count, 0 for all", model.ErrInvalid, s)
		}
		f.Limit = n
	}
	vipFound, backendFound := f.VIP == nil, !f.Backend.IsValid()
	for _, v := range st.VIPs {
		if f.VIP != nil && v.ID().Canonical() != *f.VIP {
			continue
		}
		vipFound = true
		for _, b := range v.Backends {
			if f.matchBackend(backendAddrPort(v.ID(), b.Address, b.Port)) {
				backendFound = true
			}
		}
	}
	switch {
	case !vipFound:
		return f, fmt.Errorf("vip %s: %w", f.VIP, model.ErrNotFound)
	case !backendFound && f.VIP != nil:
		return f, fmt.Errorf("vip %s: backend %s: %w", f.VIP, backendKey(f.Backend, f.BackendPort), model.ErrNotFound)
	case !backendFound:
		return f, fmt.Errorf("backend %s: %w (no vip has it)", backendKey(f.Backend, f.BackendPort), model.ErrNotFound)
	}
	return f, nil
}

// backendAddrPort is where a backend's flows go: its port, or the VIP's.
func backendAddrPort(vip model.VIPID, addr netip.Addr, port uint16) netip.AddrPort {
	if port == 0 {
		port = vip.Port
	}
	return netip.AddrPortFrom(addr.Unmap(), port)
}

func (f ConnsFilter) matchBackend(b netip.AddrPort) bool {
	if !f.Backend.IsValid() {
		return true
	}
	return b.Addr() == f.Backend && (f.BackendPort == 0 || b.Port() == f.BackendPort)
}

// connNames turns the data plane's ids into what an operator reads, from
// the maps as they are now: an entry names its backend by id, and the
// backend map says which address that id is, and of which VIP.
type connNames struct {
	vips     map[loader.VIPKey]loader.VIPMeta
	backends map[uint32]loader.Backend
}

func (s *Server) connNames() (connNames, error) {
	vips, err := s.Datapath.VIPs()
	if err != nil {
		return connNames{}, fmt.Errorf("read vips: %w", err)
	}
	bes, err := s.Datapath.Backends()
	if err != nil {
		return connNames{}, fmt.Errorf("read backends: %w", err)
	}
	return connNames{vips: vips, backends: bes}, nil
}

// conn is c as the API shows it.
func (n connNames) conn(c loader.Conn) Conn {
	vid := reconcile.VIPIDOf(c.VIP)
	out := Conn{
		Protocol:    vid.Protocol,
		Client:      netip.AddrPortFrom(c.Client.Addr().Unmap(), c.Client.Port()),
		VIP:         vid.String(),
		State:       connState(c),
		IdleSeconds: int64(c.Idle / time.Second),
	}
	meta, ok := n.vips[c.VIP]
	// An id of a deleted backend, or reused since by another VIP's, is
	// not this flow's backend any more.
	if b, found := n.backends[c.BackendID]; ok && found && b.VIPID == meta.ID {
		out.Backend = backendAddrPort(vid, b.Addr, b.Port)
	}
	if c.SNATPort != 0 {
		out.SNATPort = c.SNATPort
		if ok {
			out.SNATAddr = meta.SNATAddr
		}
	}
	return out
}

// connState names a flow's phase, an ended one by why it ended.
func connState(c loader.Conn) string {
	switch {
	case c.Phase != loader.FlowEnded:
		return c.Phase.String()
	case c.Closing:
		return "closing"
	default:
		return "expired"
	}
}

// getConns streams the connection table, filtered, as NDJSON: up to the
// limit of entries as they are found, flushed every connsFlushEvery, then
// an End line with the count of what matched and was left out. The whole
// table is walked to count them, but only what is sent is held.
func (s *Server) getConns(w http.ResponseWriter, r *http.Request) {
	f, err := parseConnsFilter(r.URL.Query(), s.Store.State())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	names, err := s.connNames()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var vipKey loader.VIPKey
	if f.VIP != nil {
		vipKey = reconcile.VIPKeyOf(*f.VIP)
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	var end ConnsEnd
	sent := 0
	var werr error
	err = s.Datapath.Conns(func(c loader.Conn) bool {
		if f.VIP != nil && c.VIP != vipKey {
			return true
		}
		conn := names.conn(c)
		if !f.matchBackend(conn.Backend) {
			return true
		}
		end.Matched++
		if f.Limit != 0 && sent >= f.Limit {
			end.Omitted++
			return true
		}
		if werr = enc.Encode(ConnsLine{Conn: &conn}); werr != nil {
			return false // the client is gone
		}
		if sent++; sent%connsFlushEvery == 0 {
			werr = rc.Flush()
		}
		return werr == nil
	})
	if werr != nil {
		s.log().Debug("conns: client gone", "err", werr)
		return
	}
	if err != nil {
		s.log().Error("api request", "method", r.Method, "path", r.URL.Path, "err", err)
		end.Error = fmt.Sprintf("read connection table: %v", err)
	}
	_ = enc.Encode(ConnsLine{End: &end})
	_ = rc.Flush()
}
