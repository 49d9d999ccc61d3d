// Package bgp is the daemon's BGP speaker, an embedded GoBGP server: it
// keeps a session to each configured peer and announces a host route
// (/32 or /128) for each VIP address the reconciler says this node
// serves, withdraws it when the reconciler says so, and withdraws them
// all before the daemon stops.
//
// Each route's next hop is the session's own local address, so a peer
// of each family is needed for the VIPs of that family: IPv4 VIPs go to
// the IPv4 peers, IPv6 VIPs to the IPv6 peers. Routes the peers send are
// ignored. GoBGP's logs go to the daemon's logger from warnings up; the
// speaker logs session changes and every announce and withdraw itself.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// Speaker is a running BGP speaker.
type Speaker struct {
	cfg       Config
	srv       *server.BgpServer
	log       *slog.Logger
	stopWatch context.CancelFunc

	mu      sync.Mutex // guards the fields below and orders announces with Stop
	routes  map[netip.Addr]bool
	stopped bool

	stateMu sync.Mutex
	states  map[netip.Addr]bgp.FSMState // each session's last state, for the logs
	downs   map[netip.Addr]string       // why each session last went down
}

// Session is one peer's session as the speaker knows it now.
type Session struct {
	Peer  Peer   // as configured, defaults filled in
	State string // idle, connect, active, opensent, openconfirm or established
	// Since is when the session was established (Up) or last went down;
	// zero when it never was up.
	Since time.Time
	// Routes is how many routes the speaker announces on the session.
	Routes    int
	LastError string // why the session last went down; "" if it never did
	LocalAddr netip.Addr
}

// Up reports whether the session is established.
func (s Session) Up() bool { return s.State == stateName(bgp.BGP_FSM_ESTABLISHED) }

// Start validates cfg, starts the speaker and opens a session to each
// peer. It announces nothing until told (AnnounceRoutes).
func Start(ctx context.Context, cfg Config, log *slog.Logger) (*Speaker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Enabled() {
		return nil, errors.New("bgp: no configuration")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lvl := new(slog.LevelVar)
	lvl.Set(slog.LevelWarn)
	srv := server.NewBgpServer(server.LoggerOption(slog.New(minLevel{log.Handler(), lvl}).With("component", "gobgp"), lvl))
	go srv.Serve()
	s := &Speaker{cfg: cfg, srv: srv, log: log, routes: map[netip.Addr]bool{}, states: map[netip.Addr]bgp.FSMState{}, downs: map[netip.Addr]string{}}
	if err := s.start(ctx); err != nil {
		srv.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Speaker) start(ctx context.Context) error {
	g := &api.Global{Asn: s.cfg.ASN, RouterId: s.cfg.RouterID.String(), ListenPort: -1}
	if s.cfg.ListenPort != 0 {
		g.ListenPort = int32(s.cfg.ListenPort)
		// Only the families of the peers: a host without IPv6 must not
		// fail to listen on ::.
		for _, p := range s.cfg.Peers {
			a := netip.IPv6Unspecified().String()
			if p.Addr.Is4() {
				a = netip.IPv4Unspecified().String()
			}
			if !slices.Contains(g.ListenAddresses, a) {
				g.ListenAddresses = append(g.ListenAddresses, a)
			}
		}
	}
	if err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: g}); err != nil {
		return fmt.Errorf("bgp: start: %w", err)
	}
	if err := s.rejectPeerRoutes(ctx); err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(context.Background())
	s.stopWatch = cancel
	if err := s.srv.WatchEvent(wctx, server.WatchEventMessageCallbacks{OnPeerUpdate: s.peerEvent}, server.WatchPeer()); err != nil {
		cancel()
		return fmt.Errorf("bgp: watch sessions: %w", err)
	}
	hold := uint64(s.cfg.HoldTime / time.Second)
	for _, p := range s.cfg.Peers {
		fam := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
		if p.Addr.Is6() {
			fam.Afi = api.Family_AFI_IP6
		}
		err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
			Conf: &api.PeerConf{NeighborAddress: p.Addr.String(), PeerAsn: p.ASN},
			Timers: &api.Timers{Config: &api.TimersConfig{
				HoldTime: hold, KeepaliveInterval: max(hold/3, 1), ConnectRetry: uint64(ConnectRetry / time.Second),
			}},
			Transport: &api.Transport{RemotePort: uint32(p.Port)},
			AfiSafis:  []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: fam, Enabled: true}}},
		}})
		if err != nil {
			cancel()
			return fmt.Errorf("bgp: peer %s: %w", p, err)
		}
	}
	s.log.Info("bgp speaker started", "asn", s.cfg.ASN, "router_id", s.cfg.RouterID, "peers", len(s.cfg.Peers),
		"hold_time", s.cfg.HoldTime, "listen_port", s.cfg.ListenPort)
	return nil
}

// rejectPeerRoutes keeps the routes the peers send out of the RIB: they
// are of no use here. (The global import policy applies to the speaker's
// own routes too: only the peers' are refused.)
func (s *Speaker) rejectPeerRoutes(ctx context.Context) error {
	const name = "xdplb-peers"
	var peers []string
	for _, p := range s.cfg.Peers {
		peers = append(peers, hostPrefix(p.Addr).String())
	}
	err := s.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
		DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: name, List: peers,
	}})
	if err == nil {
		err = s.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: &api.Policy{Name: name, Statements: []*api.Statement{{
			Name:       name,
			Conditions: &api.Conditions{NeighborSet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: name}},
			Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_REJECT},
		}}}})
	}
	if err == nil {
		err = s.srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
			Name: "global", Direction: api.PolicyDirection_POLICY_DIRECTION_IMPORT,
			Policies: []*api.Policy{{Name: name}}, DefaultAction: api.RouteAction_ROUTE_ACTION_ACCEPT,
		}})
	}
	if err != nil {
		return fmt.Errorf("bgp: import policy: %w", err)
	}
	return nil
}

// peerEvent logs a session's state changes: up at info, down (with the
// reason) at warn, the steps of opening one at debug: a peer that is
// down would fill the log with them.
func (s *Speaker) peerEvent(ev *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
	if ev.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	st := ev.Peer.State
	s.stateMu.Lock()
	was := s.states[st.NeighborAddress]
	s.states[st.NeighborAddress] = st.SessionState
	down := was == bgp.BGP_FSM_ESTABLISHED && st.SessionState != was
	if down {
		s.downs[st.NeighborAddress] = st.DisconnectMessage
	}
	s.stateMu.Unlock()
	peer := st.NeighborAddress.String()
	switch {
	case st.SessionState == was:
	case st.SessionState == bgp.BGP_FSM_ESTABLISHED:
		s.log.Info("bgp session up", "peer", peer, "peer_asn", st.PeerASN, "routes", s.routeCount(st.NeighborAddress.Is4()))
	case down:
		s.log.Warn("bgp session down", "peer", peer, "state", stateName(st.SessionState), "reason", st.DisconnectMessage)
	default:
		s.log.Debug("bgp session state", "peer", peer, "state", stateName(st.SessionState))
	}
}

// routeCount is how many routes of a family the speaker announces.
func (s *Speaker) routeCount(ipv4 bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for a := range s.routes {
		if a.Is4() == ipv4 {
			n++
		}
	}
	return n
}

// AnnounceRoutes makes the announced routes exactly a host route for each
// address of addrs: new ones are announced, those no longer in it
// withdrawn, on every session of their family. After Stop it does
// nothing.
func (s *Speaker) AnnounceRoutes(_ context.Context, addrs []netip.Addr) error {
	want := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		want[a.Unmap()] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	var add, del []netip.Addr
	for a := range want {
		if !s.routes[a] {
			add = append(add, a)
		}
	}
	for a := range s.routes {
		if !want[a] {
			del = append(del, a)
		}
	}
	slices.SortFunc(add, netip.Addr.Compare)
	slices.SortFunc(del, netip.Addr.Compare)
	var errs []error
	if len(del) > 0 {
		if err := s.srv.DeletePath(apiutil.DeletePathRequest{Paths: paths(del)}); err != nil {
			errs = append(errs, fmt.Errorf("bgp: withdraw: %w", err))
		} else {
			for _, a := range del {
				delete(s.routes, a)
				s.log.Info("bgp route withdrawn", "vip", a, "prefix", hostPrefix(a))
			}
		}
	}
	if len(add) > 0 {
		// One path at a time: one GoBGP refuses must not hold up the rest.
		for _, a := range add {
			if _, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: paths([]netip.Addr{a})}); err != nil {
				errs = append(errs, fmt.Errorf("bgp: announce %s: %w", hostPrefix(a), err))
				continue
			}
			s.routes[a] = true
			s.log.Info("bgp route announced", "vip", a, "prefix", hostPrefix(a))
		}
	}
	return errors.Join(errs...)
}

// Routes returns the announced routes, sorted.
func (s *Speaker) Routes() []netip.Prefix {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]netip.Prefix, 0, len(s.routes))
	for _, a := range slices.SortedFunc(maps.Keys(s.routes), netip.Addr.Compare) {
		out = append(out, hostPrefix(a))
	}
	return out
}

// Config returns the speaker's configuration, defaults filled in.
func (s *Speaker) Config() Config { return s.cfg }

// Sessions returns the state of every peer's session, in the order the
// peers were configured.
func (s *Speaker) Sessions(ctx context.Context) ([]Session, error) {
	byAddr := map[netip.Addr]*api.Peer{}
	err := s.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		if a, err := netip.ParseAddr(p.GetConf().GetNeighborAddress()); err == nil {
			byAddr[a] = p
		}
	})
	if err != nil {
		return nil, fmt.Errorf("bgp: list sessions: %w", err)
	}
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	out := make([]Session, 0, len(s.cfg.Peers))
	for _, cp := range s.cfg.Peers {
		ss := Session{Peer: cp, State: stateName(bgp.BGP_FSM_IDLE), LastError: s.downs[cp.Addr]}
		if p := byAddr[cp.Addr]; p != nil {
			ss.fill(p)
		}
		out = append(out, ss)
	}
	return out, nil
}

func (ss *Session) fill(p *api.Peer) {
	st := p.GetState()
	ss.State = apiStateName(st.GetSessionState())
	ts := p.GetTimers().GetState()
	if ss.Up() {
		if up := ts.GetUptime(); up != nil && up.GetSeconds() > 0 {
			ss.Since = up.AsTime()
		}
		for _, af := range p.GetAfiSafis() {
			ss.Routes += int(af.GetState().GetAdvertised())
		}
	} else if down := ts.GetDowntime(); down != nil && down.GetSeconds() > 0 {
		ss.Since = down.AsTime()
	}
	if a, err := netip.ParseAddr(p.GetTransport().GetLocalAddress()); err == nil {
		ss.LocalAddr = a
	}
}

// Stop withdraws every route, waits (within ctx) until the withdrawal
// has been sent on each established session, then closes the sessions
// (a Cease notification) and stops the speaker: a peer moves the
// traffic to the other nodes on the withdrawal, before the session ends.
func (s *Speaker) Stop(ctx context.Context) error {
	// Once stopped, AnnounceRoutes adds nothing: the routes taken here
	// are all there will be, and the wait below holds no lock (the
	// session logs take it).
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	routes := slices.Collect(maps.Keys(s.routes))
	clear(s.routes)
	s.mu.Unlock()

	var errs []error
	if len(routes) > 0 {
		// The sessions that were sent routes, and how many UPDATEs they
		// had been sent: one more is the withdrawal.
		sent := map[string]uint64{}
		err := s.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
			if p.GetState().GetSessionState() != api.PeerState_SESSION_STATE_ESTABLISHED {
				return
			}
			for _, af := range p.GetAfiSafis() {
				if af.GetState().GetAdvertised() > 0 {
					sent[p.GetConf().GetNeighborAddress()] = p.GetState().GetMessages().GetSent().GetUpdate()
				}
			}
		})
		sessions := len(sent)
		if err == nil {
			err = s.srv.DeletePath(apiutil.DeletePathRequest{Paths: paths(routes)})
		}
		if err == nil {
			err = s.waitSent(ctx, sent)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("bgp: withdraw before stop: %w", err))
		} else {
			s.log.Info("bgp routes withdrawn before stop", "routes", len(routes), "sessions", sessions)
		}
	}
	s.stopWatch()
	s.srv.Stop()
	s.log.Info("bgp speaker stopped: sessions closed")
	return errors.Join(errs...)
}

// waitSent waits until each session of sent has been sent an UPDATE more
// than it counts, or is no longer established.
func (s *Speaker) waitSent(ctx context.Context, sent map[string]uint64) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for len(sent) > 0 {
		err := s.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
			addr := p.GetConf().GetNeighborAddress()
			before, ok := sent[addr]
			if ok && (p.GetState().GetSessionState() != api.PeerState_SESSION_STATE_ESTABLISHED ||
				p.GetState().GetMessages().GetSent().GetUpdate() > before) {
				delete(sent, addr)
			}
		})
		if err != nil || len(sent) == 0 {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d sessions not sent the withdrawal: %w", len(sent), ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// hostPrefix is a's host route: a /32 or a /128.
func hostPrefix(a netip.Addr) netip.Prefix {
	return netip.PrefixFrom(a, a.BitLen())
}

// paths are the host routes of addrs, originated here (origin IGP), each
// with an unspecified next hop: GoBGP sends each session's own local
// address in its place.
func paths(addrs []netip.Addr) []*apiutil.Path {
	out := make([]*apiutil.Path, 0, len(addrs))
	for _, a := range addrs {
		nlri, err := bgp.NewIPAddrPrefix(hostPrefix(a))
		if err != nil {
			continue // an invalid address: nothing to announce
		}
		attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
		fam := bgp.RF_IPv4_UC
		if a.Is4() {
			nh, _ := bgp.NewPathAttributeNextHop(netip.IPv4Unspecified())
			attrs = append(attrs, nh)
		} else {
			fam = bgp.RF_IPv6_UC
			mp, err := bgp.NewPathAttributeMpReachNLRI(fam, []bgp.PathNLRI{{NLRI: nlri}}, netip.IPv6Unspecified())
			if err != nil {
				continue
			}
			attrs = append(attrs, mp)
		}
		out = append(out, &apiutil.Path{Family: fam, Nlri: nlri, Attrs: attrs})
	}
	return out
}

// stateName names a session state as operators know it (FRR's words).
func stateName(st bgp.FSMState) string {
	switch st {
	case bgp.BGP_FSM_IDLE:
		return "idle"
	case bgp.BGP_FSM_CONNECT:
		return "connect"
	case bgp.BGP_FSM_ACTIVE:
		return "active"
	case bgp.BGP_FSM_OPENSENT:
		return "opensent"
	case bgp.BGP_FSM_OPENCONFIRM:
		return "openconfirm"
	case bgp.BGP_FSM_ESTABLISHED:
		return "established"
	}
	return "state" + strconv.Itoa(int(st))
}

func apiStateName(st api.PeerState_SessionState) string {
	if st == api.PeerState_SESSION_STATE_UNSPECIFIED {
		return stateName(bgp.BGP_FSM_IDLE)
	}
	// The API's states are the FSM's, one up.
	return stateName(bgp.FSMState(st - 1))
}

// minLevel passes on to h only the records at or above min: GoBGP logs
// every step of every session at info.
type minLevel struct {
	h   slog.Handler
	min slog.Leveler
}

func (m minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= m.min.Level() && m.h.Enabled(ctx, l)
}
func (m minLevel) Handle(ctx context.Context, r slog.Record) error { return m.h.Handle(ctx, r) }
func (m minLevel) WithAttrs(as []slog.Attr) slog.Handler           { return minLevel{m.h.WithAttrs(as), m.min} }
func (m minLevel) WithGroup(name string) slog.Handler              { return minLevel{m.h.WithGroup(name), m.min} }
