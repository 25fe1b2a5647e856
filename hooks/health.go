package hooks

import (
	"context"
	"fmt"
	"strings"
)

// Check returns nil once every hook has succeeded, and otherwise an error
// wrapping ErrNotDone that names every hook that has not, with what it is
// doing or why it did not succeed:
//
//	hooks: not done: "crds" (running attempt 2), "cni" (not started, waiting for "crds")
//
// It fits a healthz or readyz check, the kube-apiserver post-start-hook
// pattern: not ready before Run, while hooks are unfinished, nor after a
// run in which a hook failed, was skipped or was canceled. A Runner with
// no hooks passes. Check ignores ctx and is goroutine-safe; it may be
// called from hooks, the observer and the clock. It does not block beyond
// a short lock and the Error methods of the hooks' errors it describes,
// which it calls after releasing the lock, each on a goroutine of its own:
// for an error whose Error method panics (or calls runtime.Goexit), Check
// says its text is unavailable. A nil *Runner gives an error wrapping
// ErrInvalidInput.
func (r *Runner) Check(ctx context.Context) error {
	if r == nil {
		return errNilRunner("Check")
	}
	type entry struct {
		name string
		st   status
	}
	var notDone []entry
	func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		for i, h := range r.hooks {
			if r.st != nil && r.st[i].state == Succeeded {
				continue
			}
			notDone = append(notDone, entry{h.Name, r.statusLocked(i)})
		}
	}()
	if len(notDone) == 0 {
		return nil
	}
	descs := make([]string, len(notDone))
	for k, e := range notDone {
		descs[k] = fmt.Sprintf("%q (%s)", e.name, e.st)
	}
	return fmt.Errorf("hooks: %w: %s", ErrNotDone, strings.Join(descs, ", "))
}
