package state

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/renameio/v2"

	"github.com/xdplb/xdplb/control/model"
)

// File is the name of the desired state inside the state directory.
const File = "state.json"

// fileVersion is the layout of File; a file of another version is refused,
// not guessed at.
const fileVersion = 1

// envelope is File: the state, and the SHA-256 of its exact bytes, so a
// file damaged on disk (or edited by hand without care) is refused at start
// with a clear message instead of restoring something else.
type envelope struct {
	Version int             `json:"version"`
	SHA256  string          `json:"sha256"`
	State   json.RawMessage `json:"state"`
}

// encodeFile is the content of File for st.
func encodeFile(st model.State) ([]byte, error) {
	return encodeFileCached(st, nil)
}

// vipCache holds each VIP's JSON as last written: JSON composes, so the
// state's encoding is its VIPs' encodings joined, and a rewrite of a big
// state after a single change re-encodes that VIP only.
type vipCache map[model.VIPID]cachedVIP

type cachedVIP struct {
	v   model.VIP // the store never changes a VIP it holds
	enc []byte
}

// encodeFileCached is encodeFile through c (nil: no cache), which it
// updates to hold exactly st's VIPs.
func encodeFileCached(st model.State, c vipCache) ([]byte, error) {
	body := []byte(`{"vips":[`)
	seen := make(map[model.VIPID]bool, len(st.VIPs))
	for i := range st.VIPs {
		v := &st.VIPs[i]
		id := v.ID()
		e, ok := c[id]
		if !ok || !model.EqualVIP(&e.v, v) {
			b, err := json.Marshal(v)
			if err != nil {
				return nil, fmt.Errorf("encode state: %w", err)
			}
			e = cachedVIP{v: *v, enc: b}
			if c != nil {
				c[id] = e
			}
		}
		seen[id] = true
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, e.enc...)
	}
	body = append(body, "]}"...)
	for id := range c {
		if !seen[id] {
			delete(c, id)
		}
	}
	sum := sha256.Sum256(body)
	out := make([]byte, 0, len(body)+128)
	out = fmt.Appendf(out, `{"version":%d,"sha256":"%s","state":`, fileVersion, hex.EncodeToString(sum[:]))
	out = append(out, body...)
	return append(out, "}\n"...), nil
}

// decodeFile checks and decodes the content of File into a normalized,
// not yet validated state.
func decodeFile(b []byte) (model.State, error) {
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return model.State{}, fmt.Errorf("decode: %w", err)
	}
	if env.Version != fileVersion {
		return model.State{}, fmt.Errorf("version %d: this xdplb reads version %d", env.Version, fileVersion)
	}
	sum := sha256.Sum256(env.State)
	if hex.EncodeToString(sum[:]) != env.SHA256 {
		return model.State{}, errors.New("checksum mismatch: the file was damaged or edited")
	}
	st := model.State{VIPs: []model.VIP{}}
	dec := json.NewDecoder(strings.NewReader(string(env.State)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return model.State{}, fmt.Errorf("decode state: %w", err)
	}
	model.Normalize(&st)
	return st, nil
}

// writeAtomic replaces path with data so that a crash leaves either the old
// or the new file, never a mix: renameio writes a temp file beside it,
// fsyncs and renames it; the fsync of the directory then makes the rename
// itself durable, which renameio leaves to its caller.
func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := renameio.NewPendingFile(path, renameio.WithTempDir(dir), renameio.WithPermissions(0o600))
	if err != nil {
		return err
	}
	defer f.Cleanup()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if filepath.Base(path) == File {
		if err := keepLastGood(path); err != nil {
			return err
		}
	}
	if err := f.CloseAtomicallyReplace(); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// removeTemps deletes temporary files a crash left during a write
// (renameio names them ".NAME" followed by random digits).
func removeTemps(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		for _, name := range []string{File, JournalFile} {
			if rest, ok := strings.CutPrefix(e.Name(), "."+name); ok && rest != "" && strings.Trim(rest, "0123456789") == "" {
				_ = os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
}
