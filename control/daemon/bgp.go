package daemon

import (
	"context"
	"log/slog"
	"time"

	"github.com/xdplb/xdplb/control/api"
	"github.com/xdplb/xdplb/control/bgp"
)

// BGPStopTimeout bounds how long a stopping daemon waits for its BGP
// speaker to send the withdrawal of its routes on every session.
const BGPStopTimeout = 5 * time.Second

// BGPDetachGrace is how long a daemon that detaches (--detach-on-exit)
// waits between the withdrawal of its routes and the removal of the XDP
// program, for the routers to move the traffic to the other nodes first.
const BGPDetachGrace = time.Second

// stopBGP withdraws the speaker's routes and closes its sessions; before
// a detach it then leaves the routers BGPDetachGrace to act on it.
func stopBGP(s *bgp.Speaker, detach bool, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), BGPStopTimeout)
	defer cancel()
	announced := len(s.Routes()) > 0
	if err := s.Stop(ctx); err != nil {
		log.Warn("stop bgp speaker", "err", err)
	}
	if detach && announced {
		time.Sleep(BGPDetachGrace)
	}
}

// bgpStatus is the speaker as the API shows it.
type bgpStatus struct{ s *bgp.Speaker }

// BGPStatus implements api.BGPSource.
func (b bgpStatus) BGPStatus(ctx context.Context) (api.BGPStatus, error) {
	sessions, err := b.s.Sessions(ctx)
	if err != nil {
		return api.BGPStatus{}, err
	}
	cfg := b.s.Config()
	out := api.BGPStatus{ASN: cfg.ASN, RouterID: cfg.RouterID, HoldTime: cfg.HoldTime.String(),
		Routes: []string{}, Sessions: make([]api.BGPSession, 0, len(sessions))}
	for _, p := range b.s.Routes() {
		out.Routes = append(out.Routes, p.String())
	}
	for _, s := range sessions {
		as := api.BGPSession{Peer: s.Peer.Addr, PeerASN: s.Peer.ASN, Port: s.Peer.Port, State: s.State, Up: s.Up(),
			Since: s.Since, Routes: s.Routes, LastError: s.LastError}
		if as.Up {
			as.LocalAddr = s.LocalAddr
			if !s.Since.IsZero() {
				as.Uptime = time.Since(s.Since).Truncate(time.Second).String()
			}
		}
		out.Sessions = append(out.Sessions, as)
	}
	return out, nil
}
