package bgp

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// DefaultPort is where a peer's BGP listens unless told otherwise.
const DefaultPort = 179

// DefaultHoldTime is the hold time offered to peers: FRR's datacenter
// profile (keepalive 3 s, hold 9 s). Without BFD the hold timer is what
// takes a crashed node's routes away, so it is short; a peer may
// negotiate it lower still, never higher.
const DefaultHoldTime = 9 * time.Second

// MinHoldTime and MaxHoldTime bound the hold time (RFC 4271 4.2: whole
// seconds, at least 3; 0, no keepalives, is refused: a crash would keep
// its routes forever).
const (
	MinHoldTime = 3 * time.Second
	MaxHoldTime = 65535 * time.Second
)

// ConnectRetry is how long the speaker waits between two attempts to open
// a session to a peer that is down (GoBGP's default is 120 s).
const ConnectRetry = 5 * time.Second

// Config is the speaker's configuration: the daemon's --bgp-* flags. The
// zero value is BGP off.
type Config struct {
	ASN      uint32     // our AS number
	RouterID netip.Addr // our BGP identifier, an IPv4 address
	Peers    []Peer
	// HoldTime is the hold time offered to every peer (0:
	// DefaultHoldTime); keepalives are sent every third of the negotiated
	// one.
	HoldTime time.Duration
	// ListenPort is the TCP port on which the speaker accepts sessions
	// from its peers (0: none; it always connects to them itself).
	ListenPort uint16
}

// Peer is a BGP neighbour: a router to announce the VIP routes to.
type Peer struct {
	Addr netip.Addr
	ASN  uint32 // 0: ours (an iBGP session)
	Port uint16 // 0: DefaultPort
}

// Enabled reports whether c asks for a BGP speaker at all.
func (c Config) Enabled() bool {
	return c.ASN != 0 || c.RouterID.IsValid() || len(c.Peers) > 0
}

// Validate checks c and fills in its defaults. A zero config is valid
// (BGP off), but then a listen port alone is an error, as is a partial
// config: an AS number, a router id and a peer go together.
func (c *Config) Validate() error {
	if !c.Enabled() {
		if c.ListenPort != 0 {
			return errors.New("--bgp-listen-port needs --bgp-asn, --bgp-router-id and --bgp-peer")
		}
		return nil
	}
	switch {
	case c.ASN == 0:
		return errors.New("bgp: --bgp-asn is required (with --bgp-router-id and --bgp-peer)")
	case !c.RouterID.IsValid():
		return errors.New("bgp: --bgp-router-id is required (with --bgp-asn and --bgp-peer)")
	case !c.RouterID.Is4() || c.RouterID.IsUnspecified():
		return fmt.Errorf("bgp: router id %s: want an IPv4 address other than 0.0.0.0", c.RouterID)
	case len(c.Peers) == 0:
		return errors.New("bgp: at least one --bgp-peer is required (with --bgp-asn and --bgp-router-id)")
	}
	if c.HoldTime == 0 {
		c.HoldTime = DefaultHoldTime
	}
	if c.HoldTime < MinHoldTime || c.HoldTime > MaxHoldTime || c.HoldTime%time.Second != 0 {
		return fmt.Errorf("bgp: hold time %s: want whole seconds from %s to %s", c.HoldTime, MinHoldTime, MaxHoldTime)
	}
	seen := map[netip.Addr]bool{}
	for i := range c.Peers {
		p := &c.Peers[i]
		if err := p.validate(); err != nil {
			return err
		}
		if p.ASN == 0 {
			p.ASN = c.ASN
		}
		if p.Port == 0 {
			p.Port = DefaultPort
		}
		if seen[p.Addr] {
			return fmt.Errorf("bgp: peer %s given twice", p.Addr)
		}
		seen[p.Addr] = true
	}
	return nil
}

func (p Peer) validate() error {
	a := p.Addr
	switch {
	case !a.IsValid():
		return errors.New("bgp: peer without an address")
	case a.Zone() != "" || a.IsLinkLocalUnicast():
		return fmt.Errorf("bgp: peer %s: link-local peers are not supported", a)
	case a.IsUnspecified() || a.IsMulticast() || a.Is4In6():
		return fmt.Errorf("bgp: peer %s: want a unicast IPv4 or IPv6 address", a)
	}
	return nil
}

// String writes p as ParsePeer reads it.
func (p Peer) String() string {
	s := p.Addr.String()
	if p.ASN != 0 {
		s += ",asn=" + strconv.FormatUint(uint64(p.ASN), 10)
	}
	if p.Port != 0 {
		s += ",port=" + strconv.FormatUint(uint64(p.Port), 10)
	}
	return s
}

// ParsePeer reads a --bgp-peer value: ADDR[,asn=N][,port=N], the options
// in any order. Without asn the peer is in our AS (iBGP); without port it
// listens on DefaultPort.
func ParsePeer(s string) (Peer, error) {
	parts := strings.Split(strings.TrimSpace(s), ",")
	addr, err := netip.ParseAddr(strings.TrimSpace(parts[0]))
	if err != nil {
		return Peer{}, fmt.Errorf("bgp peer %q: want ADDR[,asn=N][,port=N]: %w", s, err)
	}
	p := Peer{Addr: addr}
	seen := map[string]bool{}
	for _, opt := range parts[1:] {
		key, val, ok := strings.Cut(strings.TrimSpace(opt), "=")
		if !ok || seen[key] {
			return Peer{}, fmt.Errorf("bgp peer %q: option %q: want asn=N or port=N, each once", s, opt)
		}
		seen[key] = true
		switch key {
		case "asn":
			n, err := strconv.ParseUint(val, 10, 32)
			if err != nil || n == 0 {
				return Peer{}, fmt.Errorf("bgp peer %q: asn %q: want 1 to 4294967295", s, val)
			}
			p.ASN = uint32(n)
		case "port":
			n, err := strconv.ParseUint(val, 10, 16)
			if err != nil || n == 0 {
				return Peer{}, fmt.Errorf("bgp peer %q: port %q: want 1 to 65535", s, val)
			}
			p.Port = uint16(n)
		default:
			return Peer{}, fmt.Errorf("bgp peer %q: unknown option %q: want asn=N or port=N", s, key)
		}
	}
	if err := p.validate(); err != nil {
		return Peer{}, err
	}
	return p, nil
}
