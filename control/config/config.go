// Package config reads and writes the YAML of `apply -f`, `export` and the
// daemon's --config: the file format operators edit. It owns that format;
// the meaning of its values (defaults, rules) is the model's.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/xdplb/xdplb/control/model"
)

// document is the file: model.State with each backend's weight a pointer,
// so that a missing `weight:` (DefaultWeight) differs from `weight: 0`
// (drained). Field order and omitempty decide what export prints.
type document struct {
	VIPs []vipDoc `yaml:"vips"`
}

type vipDoc struct {
	Address     netip.Addr         `yaml:"address"`
	Port        uint16             `yaml:"port"`
	Protocol    model.Protocol     `yaml:"protocol"`
	Mode        model.Mode         `yaml:"mode,omitempty"`
	SNATAddr    *netip.Addr        `yaml:"snat_addr,omitempty"` // a pointer: see model.VIP.SNATAddr
	Scheduler   model.Scheduler    `yaml:"scheduler,omitempty"`
	Announce    *bool              `yaml:"announce,omitempty"`
	HealthCheck *model.HealthCheck `yaml:"healthcheck,omitempty"`
	// FailoverBelow: see model.VIP.FailoverBelow.
	FailoverBelow uint32          `yaml:"failover_below,omitempty"`
	Fallback      *model.Fallback `yaml:"fallback,omitempty"`
	MaxNewFlows   uint32          `yaml:"max_new_flows,omitempty"`
	Burst         uint32          `yaml:"max_new_flows_burst,omitempty"`
	Persistence   model.Duration  `yaml:"persistence,omitempty"`
	Backends      []backendDoc    `yaml:"backends"`
}

type backendDoc struct {
	Address netip.Addr `yaml:"address"`
	Port    uint16     `yaml:"port,omitempty"`
	Weight  *uint32    `yaml:"weight"`
	Drain   bool       `yaml:"drain,omitempty"`
	// Priority: see model.Backend.Priority.
	Priority    uint32 `yaml:"priority,omitempty"`
	MaxConns    uint32 `yaml:"max_conns,omitempty"`
	MaxConnsMin uint32 `yaml:"max_conns_min,omitempty"`
	Group       string `yaml:"group,omitempty"`
}

// Load reads a config file into a normalized State. It does not validate:
// the store does that when the state is applied.
func Load(path string) (model.State, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return model.State{}, fmt.Errorf("read config: %w", err)
	}
	s, err := Parse(b)
	if err != nil {
		return model.State{}, fmt.Errorf("config %s: %w", path, err)
	}
	return s, nil
}

// Parse decodes the YAML of a config file or of `export` into a normalized
// State. Unknown keys are errors (a typo must not silently become a
// default); a backend without a `weight:` key gets DefaultWeight, while an
// explicit `weight: 0` stays 0 (drained).
func Parse(b []byte) (model.State, error) {
	var doc document
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) { // an empty file is an empty state
		return model.State{}, fmt.Errorf("parse yaml: %w", oneLine(err))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return model.State{}, errors.New("parse yaml: want one document, found more")
	}
	s := model.State{VIPs: make([]model.VIP, 0, len(doc.VIPs))}
	for _, d := range doc.VIPs {
		v := model.VIP{Address: d.Address, Port: d.Port, Protocol: d.Protocol, Mode: d.Mode,
			Scheduler: d.Scheduler, Announce: d.Announce, HealthCheck: d.HealthCheck, Fallback: d.Fallback,
			MaxNewFlows: d.MaxNewFlows, MaxNewFlowsBurst: d.Burst, Persistence: d.Persistence,
			Backends: make([]model.Backend, 0, len(d.Backends))}
		if d.SNATAddr != nil {
			v.SNATAddr = *d.SNATAddr
		}
		v.FailoverBelow = d.FailoverBelow
		for _, bd := range d.Backends {
			b := model.Backend{Address: bd.Address, Port: bd.Port, Weight: model.DefaultWeight, Drain: bd.Drain,
				MaxConns: bd.MaxConns, MaxConnsMin: bd.MaxConnsMin, Group: bd.Group}
			b.Priority = bd.Priority
			if bd.Weight != nil {
				b.Weight = *bd.Weight
			}
			v.Backends = append(v.Backends, b)
		}
		s.VIPs = append(s.VIPs, v)
	}
	model.Normalize(&s)
	return s, nil
}

// Marshal writes s as YAML, the output of `export` and a valid input of
// `apply -f`: Parse(Marshal(s)) equals the normalized s. Every backend
// carries its weight, so 0 survives the round trip.
func Marshal(s model.State) ([]byte, error) {
	s = s.Clone()
	model.Normalize(&s)
	doc := document{VIPs: make([]vipDoc, 0, len(s.VIPs))}
	for _, v := range s.VIPs {
		d := vipDoc{Address: v.Address, Port: v.Port, Protocol: v.Protocol, Mode: v.Mode,
			Scheduler: v.Scheduler, Announce: v.Announce, HealthCheck: v.HealthCheck, Fallback: v.Fallback,
			MaxNewFlows: v.MaxNewFlows, Burst: v.MaxNewFlowsBurst, Persistence: v.Persistence,
			Backends: make([]backendDoc, len(v.Backends))}
		if v.SNATAddr.IsValid() {
			d.SNATAddr = &v.SNATAddr
		}
		d.FailoverBelow = v.FailoverBelow
		for j, b := range v.Backends {
			d.Backends[j] = backendDoc{Address: b.Address, Port: b.Port, Weight: &v.Backends[j].Weight, Drain: b.Drain,
				MaxConns: b.MaxConns, MaxConnsMin: b.MaxConnsMin, Group: b.Group}
			d.Backends[j].Priority = b.Priority
		}
		doc.VIPs = append(doc.VIPs, d)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("marshal state: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("marshal state: %w", err)
	}
	return buf.Bytes(), nil
}

// oneLine flattens yaml.v3's multi-line decode errors ("unmarshal errors:\n
// line 2: ...") for the one-line messages of the CLI; the original error
// stays in the chain.
func oneLine(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return &lineError{msg: strings.Join(te.Errors, "; "), err: err}
	}
	if msg := err.Error(); strings.Contains(msg, "\n") {
		return &lineError{msg: strings.Join(strings.Fields(msg), " "), err: err}
	}
	return err
}

type lineError struct {
	msg string
	err error
}

func (e *lineError) Error() string { return e.msg }
func (e *lineError) Unwrap() error { return e.err }
