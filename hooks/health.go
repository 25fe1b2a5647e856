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
// no hooks passes. Check does not block (beyond a short lock), ignores
// ctx, and is goroutine-safe. A nil *Runner gives an error wrapping
// ErrInvalidInput.
func (r *Runner) Check(ctx context.Context) error {
	if r == nil {
		return errNilRunner("Check")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var notDone []string
	for i, h := range r.hooks {
		if r.st != nil && r.st[i].state == Succeeded {
			continue
		}
		notDone = append(notDone, fmt.Sprintf("%q (%s)", h.Name, r.describeLocked(i)))
	}
	if len(notDone) == 0 {
		return nil
	}
	return fmt.Errorf("hooks: %w: %s", ErrNotDone, strings.Join(notDone, ", "))
}
