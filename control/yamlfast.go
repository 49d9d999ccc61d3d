package control

import (
	"bytes"
	"net/netip"
	"strconv"
)

// The state of a big deployment is mostly VIPs without health checks and
// plain backends, and yaml.v3 takes ~1 s to encode or decode 1,000 VIPs x
// 32 backends: most of an apply. The functions below write and read that
// common shape, byte for byte as yaml.v3 writes it, and report false on
// anything else, which then goes through yaml.v3 as before. The tests
// compare both ways with yaml.v3.

// appendVIPYAML appends v's item of MarshalState's list (v normalized), or
// reports false when v needs yaml.v3: a health check, or a value whose
// quoting yaml.v3 decides (not an IPv4 address, not a known word).
func appendVIPYAML(out []byte, v *VIP) ([]byte, bool) {
	if v.HealthCheck != nil || !v.Address.Is4() || !plainWord(string(v.Protocol)) ||
		!plainWord(string(v.Mode)) || !plainWord(string(v.Scheduler)) {
		return out, false
	}
	for _, b := range v.Backends {
		if !b.Address.Is4() {
			return out, false
		}
	}
	out = append(out, "  - address: "...)
	out = v.Address.AppendTo(out)
	out = append(out, "\n    port: "...)
	out = strconv.AppendUint(out, uint64(v.Port), 10)
	out = append(out, "\n    protocol: "...)
	out = append(out, v.Protocol...)
	if v.Mode != "" {
		out = append(out, "\n    mode: "...)
		out = append(out, v.Mode...)
	}
	if v.Scheduler != "" {
		out = append(out, "\n    scheduler: "...)
		out = append(out, v.Scheduler...)
	}
	if v.Announce != nil {
		out = append(out, "\n    announce: "...)
		out = strconv.AppendBool(out, *v.Announce)
	}
	if len(v.Backends) == 0 {
		return append(out, "\n    backends: []\n"...), true
	}
	out = append(out, yamlBackendsKey...)
	for _, b := range v.Backends {
		out = append(out, yamlBackendItem+"address: "...)
		out = b.Address.AppendTo(out)
		if b.Port != 0 {
			out = append(out, "\n        port: "...)
			out = strconv.AppendUint(out, uint64(b.Port), 10)
		}
		out = append(out, "\n        weight: "...)
		out = strconv.AppendUint(out, uint64(b.Weight), 10)
		if b.Drain {
			out = append(out, "\n        drain: true"...)
		}
		out = append(out, '\n')
	}
	return out, true
}

// plainWord: a lower-case word that YAML reads as a string (not a bool or
// null of YAML 1.1 or 1.2), so yaml.v3 writes it unquoted.
func plainWord(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c < 'a' || c > 'z' {
			return false
		}
	}
	switch s {
	case "true", "false", "null", "yes", "no", "on", "off", "y", "n":
		return false
	}
	return true
}

// parseStateFast reads a state in exactly the shape appendVIPYAML writes
// (keys in any order, a missing backend weight is DefaultWeight), or
// reports false: comments, quotes, flow style, other keys, duplicate keys,
// values it does not know to read as yaml.v3 does, and so on.
func parseStateFast(b []byte) (State, bool) {
	rest, ok := bytes.CutPrefix(b, []byte("vips:\n"))
	if !ok {
		return State{}, false
	}
	st := State{VIPs: []VIP{}}
	var v *VIP
	var be *Backend
	var vipKeys, beKeys uint
	inBackends := false
	for len(rest) > 0 {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			return State{}, false // yaml.v3 accepts it; rare enough
		}
		line := string(rest[:i])
		rest = rest[i+1:]
		switch {
		case len(line) > 4 && line[:4] == "  - ":
			st.VIPs = append(st.VIPs, VIP{})
			v, be, inBackends, vipKeys = &st.VIPs[len(st.VIPs)-1], nil, false, 0
			if !vipField(v, line[4:], &vipKeys) {
				return State{}, false
			}
		case v == nil:
			return State{}, false
		case len(line) > 8 && line[:8] == "      - " && inBackends:
			v.Backends = append(v.Backends, Backend{Weight: DefaultWeight})
			be, beKeys = &v.Backends[len(v.Backends)-1], 0
			if !backendField(be, line[8:], &beKeys) {
				return State{}, false
			}
		case len(line) > 8 && line[:8] == "        " && be != nil:
			if !backendField(be, line[8:], &beKeys) {
				return State{}, false
			}
		case len(line) > 4 && line[:4] == "    " && !inBackends:
			switch line[4:] {
			case "backends:":
				if vipKeys&(1<<7) != 0 {
					return State{}, false
				}
				vipKeys |= 1 << 7
				inBackends = true
				v.Backends = []Backend{}
			case "backends: []":
				if vipKeys&(1<<7) != 0 {
					return State{}, false
				}
				vipKeys |= 1 << 7
				v.Backends = []Backend{}
			default:
				if !vipField(v, line[4:], &vipKeys) {
					return State{}, false
				}
			}
		default:
			return State{}, false
		}
	}
	Normalize(&st)
	return st, true
}

// field splits "key: value", the value a plain scalar of letters, digits,
// dots and colons.
func field(s string) (key, val string, ok bool) {
	i := 0
	for i < len(s) && s[i] >= 'a' && s[i] <= 'z' {
		i++
	}
	if i == 0 || i+2 >= len(s) || s[i] != ':' || s[i+1] != ' ' {
		return "", "", false
	}
	key, val = s[:i], s[i+2:]
	for _, c := range []byte(val) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == ':') {
			return "", "", false
		}
	}
	return key, val, true
}

// once marks key number bit seen, false when it was seen already.
func once(seen *uint, bit uint) bool {
	if *seen&(1<<bit) != 0 {
		return false
	}
	*seen |= 1 << bit
	return true
}

func vipField(v *VIP, s string, seen *uint) bool {
	key, val, ok := field(s)
	if !ok {
		return false
	}
	switch key {
	case "address":
		a, ok := ipv4(val)
		v.Address = a
		return ok && once(seen, 0)
	case "port":
		p, ok := decimal(val, 16)
		v.Port = uint16(p)
		return ok && once(seen, 1)
	case "protocol":
		v.Protocol = Protocol(val)
		return plainWord(val) && once(seen, 2)
	case "mode":
		v.Mode = Mode(val)
		return plainWord(val) && once(seen, 3)
	case "scheduler":
		v.Scheduler = Scheduler(val)
		return plainWord(val) && once(seen, 4)
	case "announce":
		t, ok := boolean(val)
		v.Announce = &t
		return ok && once(seen, 5)
	}
	return false
}

func backendField(b *Backend, s string, seen *uint) bool {
	key, val, ok := field(s)
	if !ok {
		return false
	}
	switch key {
	case "address":
		a, ok := ipv4(val)
		b.Address = a
		return ok && once(seen, 0)
	case "port":
		p, ok := decimal(val, 16)
		b.Port = uint16(p)
		return ok && once(seen, 1)
	case "weight":
		w, ok := decimal(val, 32)
		b.Weight = uint32(w)
		return ok && once(seen, 2)
	case "drain":
		t, ok := boolean(val)
		b.Drain = t
		return ok && once(seen, 3)
	}
	return false
}

func ipv4(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	return a, err == nil && a.Is4()
}

// decimal reads a plain decimal number without leading zeros (which YAML
// may read as octal).
func decimal(s string, bits int) (uint64, bool) {
	if len(s) > 1 && s[0] == '0' {
		return 0, false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(s, 10, bits)
	return n, err == nil
}

func boolean(s string) (bool, bool) {
	switch s {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	return false, false
}
