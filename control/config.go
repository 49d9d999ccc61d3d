package control

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// LoadConfig reads a YAML config file (--config, apply -f) into a normalized
// State. It does not validate: the store does that on apply.
func LoadConfig(path string) (State, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return State{}, fmt.Errorf("read config: %w", err)
	}
	s, err := ParseState(b)
	if err != nil {
		return State{}, fmt.Errorf("config %s: %w", path, err)
	}
	return s, nil
}

// ParseState decodes the YAML of a config file or of `export` into a
// normalized State. Unknown keys are errors (a typo must not silently become
// a default); a backend without a `weight:` key gets DefaultWeight, while an
// explicit `weight: 0` stays 0 (drained).
func ParseState(b []byte) (State, error) {
	if s, ok := parseStateFast(b); ok {
		return s, nil
	}
	return parseStateYAML(b)
}

// parseStateYAML is ParseState through yaml.v3 alone.
func parseStateYAML(b []byte) (State, error) {
	var s State
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&s); err != nil {
		if errors.Is(err, io.EOF) { // an empty file is an empty state
			Normalize(&s)
			return s, nil
		}
		return State{}, fmt.Errorf("parse yaml: %w", oneLine(err))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return State{}, errors.New("parse yaml: want one document, found more")
	}
	// The struct cannot tell a missing weight from 0, the node tree can.
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return State{}, fmt.Errorf("parse yaml: %w", err)
	}
	defaultWeights(&s, &doc)
	Normalize(&s)
	return s, nil
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

// defaultWeights sets DefaultWeight on every backend whose mapping in doc
// has no weight key. Decoding already succeeded, so the tree has the shape
// of State and sequence indexes match slice indexes.
func defaultWeights(s *State, doc *yaml.Node) {
	root := deref(doc)
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = deref(root.Content[0])
	}
	vips := mapValue(root, "vips")
	if vips == nil || vips.Kind != yaml.SequenceNode {
		return
	}
	for i, vn := range vips.Content {
		if i >= len(s.VIPs) {
			return
		}
		bs := mapValue(deref(vn), "backends")
		if bs == nil || bs.Kind != yaml.SequenceNode {
			continue
		}
		for j, bn := range bs.Content {
			if j >= len(s.VIPs[i].Backends) {
				break
			}
			if mapValue(deref(bn), "weight") == nil {
				s.VIPs[i].Backends[j].Weight = DefaultWeight
			}
		}
	}
}

// mapValue returns the value of key in mapping n, following aliases and
// merge keys (<<) as the decoder does, or nil.
func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	var merged []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], deref(n.Content[i+1])
		switch {
		case k.Value == key && k.Tag != "!!merge":
			return v
		case k.Tag == "!!merge" || k.Value == "<<":
			if v.Kind == yaml.SequenceNode {
				for _, m := range v.Content {
					merged = append(merged, deref(m))
				}
			} else {
				merged = append(merged, v)
			}
		}
	}
	for _, m := range merged {
		if v := mapValue(m, key); v != nil {
			return v
		}
	}
	return nil
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// MarshalState writes s as YAML, the output of `export` and a valid input of
// `apply -f`: ParseState(MarshalState(s)) equals the normalized s. Every
// backend carries its weight, so 0 survives the round trip.
func MarshalState(s State) ([]byte, error) {
	s = s.Clone()
	Normalize(&s)
	if len(s.VIPs) > 0 {
		out, ok := []byte(yamlListHead), true
		for i := 0; ok && i < len(s.VIPs); i++ {
			out, ok = appendVIPYAML(out, &s.VIPs[i])
		}
		if ok {
			return out, nil
		}
	}
	return marshalStateYAML(s)
}

// marshalStateYAML is MarshalState of a normalized copy through yaml.v3.
func marshalStateYAML(s State) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(s); err != nil {
		return nil, fmt.Errorf("marshal state: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("marshal state: %w", err)
	}
	return buf.Bytes(), nil
}

// Clone returns a deep copy of s.
func (s State) Clone() State {
	out := State{}
	if s.VIPs != nil {
		out.VIPs = make([]VIP, len(s.VIPs))
		for i := range s.VIPs {
			out.VIPs[i] = s.VIPs[i].Clone()
		}
	}
	return out
}

// Clone returns a deep copy of v.
func (v VIP) Clone() VIP {
	out := v
	if v.Announce != nil {
		a := *v.Announce
		out.Announce = &a
	}
	if v.HealthCheck != nil {
		hc := *v.HealthCheck
		out.HealthCheck = &hc
	}
	if v.Backends != nil {
		out.Backends = append([]Backend{}, v.Backends...)
	}
	return out
}
