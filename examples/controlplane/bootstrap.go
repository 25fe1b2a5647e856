package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubeboot/kubeboot/cnibootstrap"
	"github.com/kubeboot/kubeboot/examples/internal/calico"
	"github.com/kubeboot/kubeboot/hooks"
	"github.com/kubeboot/kubeboot/readiness"
)

// adminClients are node 1's admin clients the hooks use: a clientset, the
// Calico objects' clients and cnibootstrap's.
func (d *demo) adminClients() (*kubernetes.Clientset, calico.Objects, cnibootstrap.Clients, error) {
	admin := d.api.Config()
	kube, err := kubernetes.NewForConfig(admin)
	if err != nil {
		return nil, calico.Objects{}, cnibootstrap.Clients{}, err
	}
	dyn, err := dynamic.NewForConfig(admin)
	if err != nil {
		return nil, calico.Objects{}, cnibootstrap.Clients{}, err
	}
	clients, err := cnibootstrap.NewClients(admin)
	if err != nil {
		return nil, calico.Objects{}, cnibootstrap.Clients{}, err
	}
	return kube, calico.Objects{Kube: kube, Dynamic: dyn}, clients, nil
}

// bootstrapTimeout bounds the bootstrap hooks phase.
const bootstrapTimeout = 5 * time.Minute

// retry is every bootstrap hook's policy: quick at first, capped, bounded
// by a number of attempts rather than elapsed time, because the time a hook
// spends waiting on its gate (a slow apiserver) would count against an
// elapsed-time budget.
func retry() backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.MaxInterval = 2 * time.Second
	b.MaxElapsedTime = 0
	return backoff.WithMaxRetries(b, 30)
}

// bootstrap runs the bootstrap hooks. Every apiserver-facing hook waits on
// a gate "etcd healthy and kube-apiserver ready, three times over half a
// second" before each attempt, so a control plane that is being replaced
// makes hooks wait rather than fail; the CNI hook's gate is cnibootstrap's
// wait for the add-on's prerequisites.
func (d *demo) bootstrap(ctx context.Context) error {
	kube, objs, clients, err := d.adminClients()
	if err != nil {
		return err
	}

	// The bootstrap is bounded, and a fault whose repair fails (the
	// apiserver does not come back) ends it at once instead of leaving
	// the hooks to wait on their gates forever; the repair goroutines are
	// waited for before returning.
	ctx, cancelTimeout := context.WithTimeout(ctx, bootstrapTimeout)
	defer cancelTimeout()
	ctx, abort := context.WithCancelCause(ctx)
	f := &faultState{ctx: ctx, abort: abort}
	defer f.wg.Wait()
	defer abort(nil)
	var apiPodOpts []readiness.PodOption
	gateOpts := []readiness.Option{readiness.WithStability(3, 500*time.Millisecond), readiness.WithAttemptTimeout(2 * time.Second)}
	if d.cfg.Fault == FaultStaticPodUpgrade {
		if f.upgrade, err = d.beginStaticPodUpgrade(ctx, kube, abort); err != nil {
			return fmt.Errorf("static-pod-upgrade: %w", err)
		}
		f.wg.Add(1)
		go func() { // so that every return waits for the restart
			defer f.wg.Done()
			f.upgrade.wait()
		}()
		apiPodOpts = f.upgrade.gateOptions()
		gateOpts = append(gateOpts, readiness.WithObserver(f.upgrade.gateAttempt))
	}
	// Node 1's control plane, as RKE2 checks it before it releases its
	// hooks: etcd healthy, node 1's static pods Ready (the mirror pods
	// the kubelet keeps, under an upgrade the new one), and node 1's
	// apiserver answering /readyz — stable for three passes over half a
	// second.
	node1 := d.nodes[0].name
	controlPlaneUp := readiness.Gate(
		readiness.All(
			readiness.EtcdHealthy(d.client),
			readiness.StaticPodReady(kube, staticPodNamespace, mirrorPod(etcdPodName, node1)),
			readiness.StaticPodReady(kube, staticPodNamespace, mirrorPod(apiServerPodName, node1), apiPodOpts...),
			readiness.APIServerReady(kube.Discovery().RESTClient()),
		),
		gateOpts...,
	)
	lastUnmet := "-"
	objectReq := calico.Requirements(calico.Namespace)[1].Name()
	var unmetMu sync.Mutex
	cniReady := func(ctx context.Context) error {
		return cnibootstrap.Wait(ctx, clients, calico.Requirements(calico.Namespace), cnibootstrap.WithProgress(func(unmet []cnibootstrap.Unmet) {
			// One line each time the set of unmet requirements changes.
			names := make([]string, len(unmet))
			for i, u := range unmet {
				names[i] = u.Requirement
			}
			key := strings.Join(names, "; ")
			if len(unmet) == 1 && unmet[0].Requirement == objectReq && strings.Contains(unmet[0].Reason, "datastoreReady is false") {
				f.noteWaiterHeld()
			}
			unmetMu.Lock()
			changed := key != lastUnmet
			lastUnmet = key
			unmetMu.Unlock()
			if changed {
				reasons := make([]string, len(unmet))
				for i, u := range unmet {
					reasons[i] = u.String()
				}
				d.tl.Record("hooks", "cni prerequisites", fmt.Sprintf("%d unmet", len(unmet)), strings.Join(reasons, "; "))
			}
		}))
	}

	runner, err := hooks.New(hooks.WithObserver(func(e hooks.Event) { d.observe(e, f) }))
	if err != nil {
		return err
	}
	hs := d.bootstrapHooks(objs, controlPlaneUp, f)
	hs = append(hs, hooks.Hook{
		Name:  "cni",
		Gate:  cniReady,
		Run:   f.seen("cni", func(ctx context.Context) error { return d.startCNI(ctx, kube) }),
		Retry: retry,
	})
	if err := runner.Add(hs...); err != nil {
		return err
	}
	d.tl.Record("hooks", "run", "begin", fmt.Sprintf("%d hooks", len(hs)))
	err = runner.Run(ctx)
	if cause := context.Cause(ctx); err != nil && cause != nil && !errors.Is(cause, context.Canceled) {
		err = fmt.Errorf("%w (%v)", err, cause)
	}
	if err != nil {
		abort(nil) // a repair still under way ends now
	}
	f.wg.Wait()
	d.res.Hooks = runner.Report()
	if err != nil {
		d.tl.Record("hooks", "run", "failed", err.Error())
		return err
	}
	d.tl.Record("hooks", "run", "ok", "critical path "+strings.Join(d.res.Hooks.CriticalPath, " → "))
	if err := f.err(); err != nil {
		return err
	}
	switch d.cfg.Fault {
	case FaultAPIServerRestart:
		// Absorbed by the gate: crds failed once on the restarting
		// apiserver and then took exactly one more attempt; blind retries
		// without the gate would have failed again while it was down.
		d.res.FaultObserved = f.restarted() && hookAttempts(d.res.Hooks, "crds") == 2
	case FaultCalicoRace:
		// The waiter itself held the CNI back on the not-ready object.
		d.res.FaultObserved = f.waiterHeldOnNotReady()
	case FaultStaticPodUpgrade:
		ev, err := f.upgrade.observe(ctx)
		d.res.StaticPodUpgrade = ev
		if err != nil {
			return fmt.Errorf("static-pod-upgrade, the evidence: %w", err)
		}
		d.res.FaultObserved = true
	}
	return nil
}

// bootstrapHooks returns the hooks that create the CNI's cluster objects.
// They race on purpose: nothing orders the ClusterInformation after its CRD,
// so its first attempts fail until the CRD is served. Under the calico-race
// fault they run in the worst order instead: binding, role, CRD, and the
// object last, not ready at first.
func (d *demo) bootstrapHooks(o calico.Objects, gate func(context.Context) error, f *faultState) []hooks.Hook {
	hook := func(name string, after []string, run func(context.Context) error) hooks.Hook {
		return hooks.Hook{Name: name, After: after, Gate: gate, Run: f.seen(name, run), Retry: retry, Timeout: 10 * time.Second}
	}
	if d.cfg.Fault == FaultCalicoRace {
		return []hooks.Hook{
			hook("rbac-binding", nil, func(ctx context.Context) error {
				if err := o.CreateServiceAccount(ctx); err != nil {
					return err
				}
				return o.CreateBinding(ctx)
			}),
			hook("rbac-role", []string{"rbac-binding"}, o.CreateRole),
			hook("crds", []string{"rbac-role"}, o.CreateCRD),
			hook("cluster-information", []string{"crds"}, func(ctx context.Context) error {
				if err := o.SetClusterInformation(ctx, false); err != nil {
					return err
				}
				d.tl.Record("calico-race", "fault", "injected", "ClusterInformation default created with datastoreReady=false")
				select {
				case <-time.After(time.Second):
				case <-ctx.Done():
					return ctx.Err()
				}
				if err := o.SetClusterInformation(ctx, true); err != nil {
					return err
				}
				d.tl.Record("calico-race", "fault", "observed", "datastoreReady=true: the last prerequisite")
				return nil
			}),
		}
	}
	crds := o.CreateCRD
	if d.cfg.Fault == FaultAPIServerRestart {
		crds = func(ctx context.Context) error {
			if f.triggerRestart(d) {
				// The first attempt runs while the apiserver is replaced.
				if err := f.waitStopped(ctx); err != nil {
					return err
				}
			}
			return o.CreateCRD(ctx)
		}
	}
	return []hooks.Hook{
		hook("rbac", nil, func(ctx context.Context) error {
			for _, step := range []func(context.Context) error{o.CreateServiceAccount, o.CreateBinding, o.CreateRole} {
				if err := step(ctx); err != nil {
					return err
				}
			}
			return nil
		}),
		hook("crds", nil, crds),
		hook("cluster-information", nil, func(ctx context.Context) error { return o.SetClusterInformation(ctx, true) }),
	}
}

// startCNI stands in for the CNI starting: it lists ClusterInformations as
// calico-typha, which only works once its permission is effective.
func (d *demo) startCNI(ctx context.Context, kube kubernetes.Interface) error {
	exp := int64(600)
	tr, err := kube.CoreV1().ServiceAccounts(calico.Namespace).CreateToken(ctx, calico.Account,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("token for %s/%s: %w", calico.Namespace, calico.Account, err)
	}
	cfg := rest.AnonymousClientConfig(d.api.Config())
	cfg.BearerToken = tr.Status.Token
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	list, err := dyn.Resource(calico.ClusterInformations).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("calico-typha listing clusterinformations: %w", err)
	}
	for _, item := range list.Items {
		if item.GetName() != "default" {
			continue
		}
		ready, _, _ := unstructured.NestedBool(item.Object, "spec", "datastoreReady")
		if !ready {
			return errors.New("calico-typha found ClusterInformation default with datastoreReady=false")
		}
		d.tl.Record("hooks", "cni start", "ok", "calico-typha read ClusterInformation default: datastoreReady=true")
		return nil
	}
	return errors.New("calico-typha found no ClusterInformation default")
}

// observe puts hook events on the timeline.
func (d *demo) observe(e hooks.Event, f *faultState) {
	detail := ""
	switch e.Kind {
	case hooks.EventAttemptFailed:
		detail = fmt.Sprintf("attempt %d: %v; retry in %s", e.Attempt, e.Err, e.Delay.Round(time.Millisecond))
	case hooks.EventFailed, hooks.EventSkipped, hooks.EventCanceled:
		detail = fmt.Sprint(e.Err)
	case hooks.EventStarted, hooks.EventGateWaiting:
		detail = fmt.Sprintf("attempt %d", e.Attempt)
	}
	d.tl.RecordAt(e.Time, "hooks", "hook "+e.Hook, e.Kind.String(), detail)
}

// faultState coordinates the apiserver-restart and static-pod-upgrade
// faults with the hooks.
type faultState struct {
	ctx     context.Context // the bootstrap run's
	abort   context.CancelCauseFunc
	upgrade *podUpgrade // static-pod-upgrade only
	mu      sync.Mutex
	wg      sync.WaitGroup
	started bool
	stopped chan struct{}
	done    bool
	restErr error
	// waiterHeld is set when cnibootstrap itself reported ClusterInformation
	// default, with datastoreReady false, as the only unmet requirement.
	waiterHeld bool
}

// seen wraps a hook's Run: under static-pod-upgrade, each attempt first
// records what it sees as it starts.
func (f *faultState) seen(hook string, run func(context.Context) error) func(context.Context) error {
	if f.upgrade == nil {
		return run
	}
	return func(ctx context.Context) error {
		f.upgrade.seen(ctx, hook)
		return run(ctx)
	}
}

func (f *faultState) noteWaiterHeld() {
	f.mu.Lock()
	f.waiterHeld = true
	f.mu.Unlock()
}

func (f *faultState) waiterHeldOnNotReady() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.waiterHeld
}

// triggerRestart starts restarting the apiserver, once; it reports whether
// this call did. The restart is bounded by the run's context (not the
// hook attempt's, which ends when the attempt fails), so Ctrl-C does not
// wait for it.
func (f *faultState) triggerRestart(d *demo) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.started {
		return false
	}
	f.started = true
	f.stopped = make(chan struct{})
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		d.tl.Record("node1", "fault", "injected", "kube-apiserver restarting while hooks run")
		_ = d.api.Stop()
		close(f.stopped)
		err := d.api.Start(f.ctx)
		f.mu.Lock()
		f.done, f.restErr = err == nil, err
		f.mu.Unlock()
		if err != nil {
			d.tl.Record("node1", "fault", "failed", "kube-apiserver did not come back: "+err.Error())
			if f.abort != nil {
				f.abort(fmt.Errorf("apiserver-restart: the kube-apiserver did not come back: %w", err))
			}
			return
		}
		d.tl.Record("node1", "fault", "observed", "kube-apiserver is back; waiting hooks resume through their gates")
	}()
	return true
}

func (f *faultState) waitStopped(ctx context.Context) error {
	f.mu.Lock()
	ch := f.stopped
	f.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *faultState) restarted() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.done
}

func (f *faultState) err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.restErr != nil {
		return errors.Join(errors.New("apiserver-restart fault"), f.restErr)
	}
	return nil
}

// hookAttempts returns how many attempts the named hook made.
func hookAttempts(r hooks.Report, name string) int {
	for _, h := range r.Hooks {
		if h.Name == name {
			return h.Attempts
		}
	}
	return 0
}
