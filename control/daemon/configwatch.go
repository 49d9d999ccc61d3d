package daemon

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/xdplb/xdplb/control/config"
)

// Causes of a reload of --config, as reloadConfig logs them.
const (
	causeSIGHUP  = "SIGHUP"
	causeChanged = "config file changed"
)

// ConfigDebounce is how long watchConfig waits after a change of the
// config file for the next one before it reloads: a tool that writes the
// file in several steps causes one reload, of the finished file.
const ConfigDebounce = 300 * time.Millisecond

// reloadConfig replaces the desired state with file's for every request
// on reqs (its cause), as `apply -f` does: validated first, all or
// nothing, the running state kept when the file is bad. Without --config
// a request is logged and ignored.
func reloadConfig(ctx context.Context, reqs <-chan string, file string, store stateReplacer, log *slog.Logger) {
	for {
		var cause string
		select {
		case <-ctx.Done():
			return
		case cause = <-reqs:
		}
		if file == "" {
			log.Info(cause+": no --config to reload, ignored", "cause", cause)
			continue
		}
		st, err := config.Load(file)
		if err == nil {
			err = store.Replace(st)
		}
		if err != nil {
			log.Error(cause+": config not reloaded, the running state is kept", "cause", cause, "file", file, "err", err)
			continue
		}
		log.Info(cause+": state replaced from config file", "cause", cause, "file", file, "vips", len(st.VIPs))
	}
}

// watchConfig asks reqs for a reload whenever file's content changes:
// written in place or replaced by a rename, as editors and configuration
// management tools do; the directory is watched so that a replaced file
// is still seen. Changes within ConfigDebounce of each other are one
// reload, and a change that leaves the content as it was (a touch, the
// same file pushed again) is none. It returns when ctx is done, or at once
// if the directory cannot be watched.
func watchConfig(ctx context.Context, file string, reqs chan<- string, debounce time.Duration, log *slog.Logger) error {
	file = filepath.Clean(file)
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch config: %w", err)
	}
	defer w.Close()
	if err := w.Add(filepath.Dir(file)); err != nil {
		return fmt.Errorf("watch config %s: %w", file, err)
	}
	last := fileSum(file)
	timer := time.NewTimer(debounce)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-w.Errors:
			log.Warn("watch config", "file", file, "err", err)
		case ev := <-w.Events:
			if filepath.Clean(ev.Name) == file {
				timer.Reset(debounce)
			}
		case <-timer.C:
			sum := fileSum(file)
			if sum == nil || bytes.Equal(sum, last) {
				continue // gone for now (a rename in two steps), or unchanged
			}
			last = sum
			select {
			case reqs <- causeChanged:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// fileSum is the SHA-256 of file's content; nil when it cannot be read.
func fileSum(file string) []byte {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	s := sha256.Sum256(b)
	return s[:]
}
