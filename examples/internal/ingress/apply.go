package ingress

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/kubeboot/kubeboot/cnibootstrap"
	"github.com/kubeboot/kubeboot/hooks"
)

// Result is what one Apply did and saw.
type Result struct {
	Release Release
	// Report is the hook runner's report.
	Report hooks.Report
	// Events are the runner's events, in causal order.
	Events []hooks.Event
	// Snapshots are the cluster as read when each hook's Run began (after
	// its gate opened, before it acted), by hook name; a hook that never
	// ran has none.
	Snapshots map[string]Snapshot
	// Held is, by hook name, the first report of its gate that something
	// was unmet: proof that the gate held the hook back. A gate that
	// opened at once has none.
	Held map[string]string
	// After is the cluster as read when the run ended.
	After Snapshot
	// Calls is the webhook servers' request log during the run.
	Calls []Call

	mu sync.Mutex
}

func (r *Result) noteHeld(hook, line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.Held[hook]; !ok {
		r.Held[hook] = line
	}
}

func (r *Result) note(s Snapshot) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Snapshots[s.Hook] = s
}

func (r *Result) has(hook string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.Snapshots[hook]
	return ok
}

func (r *Result) event(e hooks.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Events = append(r.Events, e)
}

// Started returns the hooks whose Run started, in the order they started.
func (r *Result) Started() []string {
	var out []string
	seen := map[string]bool{}
	for _, e := range r.Events {
		if e.Kind == hooks.EventStarted && !seen[e.Hook] {
			seen[e.Hook] = true
			out = append(out, e.Hook)
		}
	}
	return out
}

// retry is every hook's policy: quick, capped, bounded by a number of
// attempts (the gates do the long waiting).
func retry() backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.MaxInterval = 2 * time.Second
	b.MaxElapsedTime = 0
	return backoff.WithMaxRetries(b, 20)
}

// Apply installs the add-on at rel, or upgrades it to rel, with the hook
// graph of the package doc, and returns what it did and saw (never nil).
// It blocks until the run ends; cancelling ctx cancels the run. Its error
// is the runner's *hooks.RunError when a hook did not succeed (or an error
// reading the cluster after a successful run): for a chart that
// fails to render, the default-backend hook's gate fails with the
// *cnibootstrap.FailedError of the install Job (errors.As finds it) as soon
// as the Job has failed FailAfter times, and no later hook runs.
func (a *Addon) Apply(ctx context.Context, rel Release) (*Result, error) {
	res := &Result{Release: rel, Snapshots: map[string]Snapshot{}, Held: map[string]string{}}
	ns := a.opts.Namespace
	calls := len(a.Calls())
	runner, err := hooks.New(hooks.WithObserver(func(e hooks.Event) {
		res.event(e)
		detail := ""
		switch e.Kind {
		case hooks.EventAttemptFailed:
			detail = fmt.Sprintf("attempt %d: %v; retry in %s", e.Attempt, e.Err, e.Delay.Round(time.Millisecond))
		case hooks.EventFailed, hooks.EventSkipped, hooks.EventCanceled:
			detail = fmt.Sprint(e.Err)
		case hooks.EventStarted:
			detail = fmt.Sprintf("attempt %d", e.Attempt)
		}
		a.record("hook "+e.Hook, e.Kind.String(), "%s", detail)
	}))
	if err != nil {
		return res, err
	}
	// step runs act after reading the cluster as the hook starts.
	step := func(hook string, act func(context.Context, Release) error) func(context.Context) error {
		return func(ctx context.Context) error {
			if !res.has(hook) {
				s, err := a.Snapshot(ctx, hook)
				if err != nil {
					return fmt.Errorf("reading the cluster: %w", err)
				}
				res.note(s)
				a.record(hook, "sees", "%s", s)
			}
			return act(ctx, rel)
		}
	}
	probe := a.ingress(Probe, rel.Version)
	err = runner.Add(
		hooks.Hook{Name: HookInstallChart, Run: step(HookInstallChart, a.ensureJob), Retry: retry},
		hooks.Hook{Name: HookDefaultBackend, After: []string{HookInstallChart}, Retry: retry,
			Gate: a.gate(HookDefaultBackend, res, cnibootstrap.JobComplete{Namespace: ns, Job: ChartJob, FailAfter: FailAfter}),
			Run:  step(HookDefaultBackend, a.applyBackend)},
		hooks.Hook{Name: HookController, After: []string{HookDefaultBackend}, Retry: retry,
			Gate: a.gate(HookController, res,
				cnibootstrap.RolledOut{Kind: cnibootstrap.Deployment, Namespace: ns, Workload: Backend},
				cnibootstrap.ServiceReady{Namespace: ns, Service: Backend}),
			Run: step(HookController, a.applyController)},
		hooks.Hook{Name: HookWebhook, After: []string{HookController}, Retry: retry,
			Gate: a.gate(HookWebhook, res, cnibootstrap.RolledOut{Kind: cnibootstrap.DaemonSet, Namespace: ns, Workload: Controller}),
			Run:  step(HookWebhook, a.serveWebhook)},
		hooks.Hook{Name: HookIngresses, After: []string{HookWebhook}, Retry: retry,
			Gate: a.gate(HookIngresses, res, cnibootstrap.WebhookServing{Kind: cnibootstrap.ValidatingWebhook,
				Configuration: a.WebhookConfiguration(), ProbeGVR: ingressGVR, Probe: probe}),
			Run: step(HookIngresses, a.applyIngresses)},
	)
	if err != nil {
		return res, err
	}
	a.record("apply", "begin", "%s (install Job exits %d)", rel.Version, rel.ChartExitCode)
	runErr := runner.Run(ctx)
	res.Report = runner.Report()
	res.Calls = a.Calls()[calls:]
	// The end state, read with a context of its own: ctx may have ended.
	actx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	after, err := a.Snapshot(actx, "after")
	if err != nil && runErr == nil {
		return res, fmt.Errorf("reading the cluster after the run: %w", err)
	}
	res.After = after
	if runErr != nil {
		a.record("apply", "failed", "%s: %v", rel.Version, runErr)
		return res, runErr
	}
	a.record("apply", "ok", "%s", rel.Version)
	return res, nil
}
