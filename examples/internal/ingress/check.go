package ingress

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/kubeboot/kubeboot/cnibootstrap"
	"github.com/kubeboot/kubeboot/hooks"
)

// CheckOrder checks, from the evidence rather than from the waits, that a
// successful Apply happened in the order the graph promises, on a cluster
// of nodes nodes: the hooks started in order; as the default-backend hook
// started, the release's install Job was complete; as the controller hook
// started, only the release's default-backend pods were left, all ready;
// as the webhook hook started, no controller pod of another release was
// left (not even terminating) and the release's ran ready on every node;
// before the ingresses hook started, the release's webhook server had
// answered the gate's dry-run; and the webhook server of the release itself
// validated every Ingress. The error says the first thing that does not
// hold.
func (r *Result) CheckOrder(nodes int) error {
	v := r.Release.Version
	for _, h := range r.Report.Hooks {
		if h.State != hooks.Succeeded {
			return fmt.Errorf("hook %s ended %s", h.Name, h.State)
		}
	}
	if got := r.Started(); !slices.Equal(got, Hooks) {
		return fmt.Errorf("hooks started in the order %v, want %v", got, Hooks)
	}
	snap := func(hook string) (Snapshot, error) {
		s, ok := r.Snapshots[hook]
		if !ok {
			return s, fmt.Errorf("no snapshot at the start of hook %s", hook)
		}
		return s, nil
	}
	s, err := snap(HookDefaultBackend)
	if err != nil {
		return err
	}
	if s.JobVersion != v || !s.JobComplete {
		return fmt.Errorf("as %s started: install Job %q complete=%v, want %s complete", HookDefaultBackend, s.JobVersion, s.JobComplete, v)
	}
	if s, err = snap(HookController); err != nil {
		return err
	}
	if err := onlyRelease("default-backend", s.Backend, v, 1); err != nil {
		return fmt.Errorf("as %s started: %w", HookController, err)
	}
	if s, err = snap(HookWebhook); err != nil {
		return err
	}
	if err := onlyRelease("controller", s.Controller, v, nodes); err != nil {
		return fmt.Errorf("as %s started: %w", HookWebhook, err)
	}
	if s, err = snap(HookIngresses); err != nil {
		return err
	}
	if s.WebhookVersion != v {
		return fmt.Errorf("as %s started: the webhook configuration points at %q, want %s", HookIngresses, s.WebhookVersion, v)
	}
	probed := false
	for _, c := range r.Calls {
		if c.Server == v && c.DryRun && c.Name == Probe && !c.At.After(s.At) {
			probed = true
		}
	}
	if !probed {
		return fmt.Errorf("the %s webhook server logged no dry-run of %s before %s started", v, Probe, HookIngresses)
	}
	for _, name := range Ingresses {
		ok := false
		for _, c := range r.Calls {
			ok = ok || (c.Server == v && c.Name == name && !c.DryRun && c.Allowed && c.At.After(s.At))
		}
		if !ok {
			return fmt.Errorf("the %s webhook server logged no admission of ingress %s after %s started: %v", v, name, HookIngresses, r.Calls)
		}
		if got := r.After.Ingresses[name]; got != v {
			return fmt.Errorf("ingress %s is at %q after the run, want %s", name, got, v)
		}
	}
	return nil
}

// onlyRelease checks that every live pod of a component is of release v,
// ready, want of them on as many nodes (want 1: at least one).
func onlyRelease(component string, pods map[string]Pods, v string, want int) error {
	for other, p := range pods {
		if other != v && p.Live > 0 {
			return fmt.Errorf("%d %s pod(s) of %s still live (%d terminating)", p.Live, component, other, p.Terminating)
		}
	}
	p := pods[v]
	if p.Live == 0 || p.Ready != p.Live || p.Ready < want || p.Nodes < want {
		return fmt.Errorf("%s at %s: %d/%d ready on %d node(s), want %d", component, v, p.Ready, p.Live, p.Nodes, want)
	}
	return nil
}

// CheckStoppedAtChart checks, from the evidence, that a failed Apply of a
// chart that fails to render stopped at once at its install Job, with the
// add-on at release prev left as it was, running on nodes nodes: the error
// is the install Job's *cnibootstrap.FailedError (Reason "FailAfter"), not
// a deadline; only the install-chart hook ran, the default-backend hook
// failed on its gate and every later hook was skipped; the cluster shows
// the release's Job failing with the chart's exit code; and the default
// backend, the controller, the webhook configuration and the Ingresses are
// still at prev, every pod ready, with no admission request made. It
// returns the FailedError found.
func (r *Result) CheckStoppedAtChart(runErr error, prev string, nodes int) (*cnibootstrap.FailedError, error) {
	var fe *cnibootstrap.FailedError
	if !errors.As(runErr, &fe) {
		return nil, fmt.Errorf("the run did not end on a failed requirement: %v", runErr)
	}
	if errors.Is(runErr, context.DeadlineExceeded) || errors.Is(runErr, context.Canceled) {
		return fe, fmt.Errorf("the run ended on a context, not on the failure alone: %v", runErr)
	}
	if fe.Kind != "Job" || fe.Name != ChartJob || fe.Reason != "FailAfter" {
		return fe, fmt.Errorf("failed %s %s/%s (%s), want the install Job %s failing %d times", fe.Kind, fe.Namespace, fe.Name, fe.Reason, ChartJob, FailAfter)
	}
	if got := r.Started(); !slices.Equal(got, []string{HookInstallChart}) {
		return fe, fmt.Errorf("hooks started: %v, want only %s", got, HookInstallChart)
	}
	for _, h := range r.Report.Hooks {
		want := hooks.Skipped
		switch h.Name {
		case HookInstallChart:
			want = hooks.Succeeded
		case HookDefaultBackend:
			want = hooks.Failed
		}
		if h.State != want {
			return fe, fmt.Errorf("hook %s ended %s, want %s", h.Name, h.State, want)
		}
	}
	s := r.After
	if s.JobVersion != r.Release.Version || s.JobComplete || s.JobFailures < FailAfter || s.JobLastExit != r.Release.ChartExitCode {
		return fe, fmt.Errorf("after the run the cluster shows the install Job as: %s", s)
	}
	if err := onlyRelease("default-backend", s.Backend, prev, 1); err != nil {
		return fe, fmt.Errorf("after the run: %w", err)
	}
	if err := onlyRelease("controller", s.Controller, prev, nodes); err != nil {
		return fe, fmt.Errorf("after the run: %w", err)
	}
	if s.WebhookVersion != prev {
		return fe, fmt.Errorf("after the run the webhook configuration points at %q, want %s", s.WebhookVersion, prev)
	}
	for _, name := range Ingresses {
		if s.Ingresses[name] != prev {
			return fe, fmt.Errorf("after the run ingress %s is at %q, want %s", name, s.Ingresses[name], prev)
		}
	}
	if len(r.Calls) != 0 {
		return fe, fmt.Errorf("the webhook was called during the run: %v", r.Calls)
	}
	return fe, nil
}
