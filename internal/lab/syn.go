package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// synTable holds the SYN tracker of a node (separate from the counters, so
// both can be installed).
const synTable = "xlbsyn"

// TrackSYNs records, in n's kernel, the client port of every SYN (without
// ACK) matching match (an nft expression, e.g. "ip daddr 10.200.0.100 tcp
// dport 80") that arrives. With a distinct client port per connection this
// says exactly which backend each connection reached, failed ones included:
// a SYN answered by a RST is seen here too.
func (n *Node) TrackSYNs(ctx context.Context, match string) error {
	ruleset := fmt.Sprintf(`table inet %s {
  set syns { type inet_service; size 65535; flags dynamic; }
  chain input { type filter hook input priority -10; policy accept;
    %s tcp flags & (syn | ack) == syn add @syns { tcp sport }
  }
}
`, synTable, match)
	ctx, cancel := context.WithTimeout(ctx, Scale(30*time.Second))
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", n.NetNS, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %w: %s\nruleset:\n%s", n.NetNS, err, strings.TrimSpace(string(out)), ruleset)
	}
	return nil
}

// SYNPorts returns the client ports whose SYNs TrackSYNs has seen.
func (n *Node) SYNPorts(ctx context.Context) (map[uint16]bool, error) {
	out, err := n.Exec(ctx, "nft", "-j", "list", "set", "inet", synTable, "syns")
	if err != nil {
		return nil, err
	}
	var doc struct {
		Nftables []struct {
			Set *struct {
				Elem []json.RawMessage `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return nil, fmt.Errorf("parse nft set in %s: %w", n.NetNS, err)
	}
	ports := map[uint16]bool{}
	for _, o := range doc.Nftables {
		if o.Set == nil {
			continue
		}
		for _, raw := range o.Set.Elem {
			p, err := setPort(raw)
			if err != nil {
				return nil, fmt.Errorf("nft set in %s: %w", n.NetNS, err)
			}
			ports[p] = true
		}
		return ports, nil
	}
	return nil, fmt.Errorf("nft set %s/syns not found in %s", synTable, n.NetNS)
}

// setPort decodes one set element: a plain number, or {"elem": {"val": N,
// ...}} when the element carries extra state.
func setPort(raw json.RawMessage) (uint16, error) {
	var p uint16
	if err := json.Unmarshal(raw, &p); err == nil {
		return p, nil
	}
	var e struct {
		Elem struct {
			Val uint16 `json:"val"`
		} `json:"elem"`
	}
	if err := json.Unmarshal(raw, &e); err != nil || e.Elem.Val == 0 {
		return 0, fmt.Errorf("unexpected set element %s", raw)
	}
	return e.Elem.Val, nil
}
