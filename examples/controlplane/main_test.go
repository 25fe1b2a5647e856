package main

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kubeboot/kubeboot/cnibootstrap"
	"github.com/kubeboot/kubeboot/etcdmember"
	"github.com/kubeboot/kubeboot/examples/internal/ingress"
	"github.com/kubeboot/kubeboot/hooks"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.LeakOptions()...)
}

// TestControlPlaneExample runs the demonstration in-process for the default
// path and every fault, and checks the end state and that each fault really
// happened.
func TestControlPlaneExample(t *testing.T) {
	for _, fault := range append([]string{FaultNone}, Faults...) {
		name := fault
		if name == "" {
			name = "default"
		}
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			res, err := Run(ctx, Config{Members: 3, Fault: fault, Out: &out, Log: &out})
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, out.String())
			}
			wantVoters := 3
			if fault == FaultDeadLearner {
				wantVoters = 2 // node3 was not promoted, and its join removed it
			}
			if res.Voters != wantVoters || res.Learners != 0 {
				t.Errorf("voters %d learners %d, want %d and 0", res.Voters, res.Learners, wantVoters)
			}
			if len(res.Addresses) != 1 {
				t.Errorf("agent addresses %v, want the one apiserver", res.Addresses)
			}
			if len(res.Hooks.Hooks) == 0 {
				t.Fatal("no hooks ran")
			}
			for _, h := range res.Hooks.Hooks {
				if h.State != hooks.Succeeded {
					t.Errorf("hook %s ended %s", h.Name, h.State)
				}
			}
			if !res.FaultObserved {
				t.Errorf("fault %q not observed", fault)
			}
			if fault != FaultNone {
				injected, observed := false, false
				for _, e := range res.Events {
					injected = injected || (e.Step == "fault" && e.Outcome == "injected")
					observed = observed || (e.Step == "fault" && e.Outcome == "observed")
				}
				if !injected || !observed {
					t.Errorf("fault %s: injected=%v observed=%v in the timeline", fault, injected, observed)
				}
			}
			checkTimelineSVG(t, res, 3, fault)
			switch fault {
			case FaultAPIServerRestart:
				// Exactly two attempts: the first failed on the restarting
				// apiserver, the second waited on the gate until it was back
				// (blind retries would have failed again meanwhile).
				crds := findHook(res.Hooks, "crds")
				if crds.Attempts != 2 {
					t.Errorf("crds hook ran %d time(s), want 2: one failure on the restarting apiserver, one success after the gate", crds.Attempts)
				}
			case FaultCalicoRace:
				if !strings.Contains(out.String(), "datastoreReady") {
					t.Errorf("timeline does not show the ClusterInformation going ready:\n%s", out.String())
				}
				// The CNI hook's only attempt started after the object was
				// created not ready; startCNI itself refuses a not-ready one.
				if cni := findHook(res.Hooks, "cni"); cni.Attempts != 1 {
					t.Errorf("cni hook ran %d times, want once, released only when everything was usable", cni.Attempts)
				}
				if !eventBefore(res.Events, "injected", "hook cni") {
					t.Errorf("the cni hook started before ClusterInformation existed")
				}
			case FaultIngressUpgrade:
				checkIngressUpgrade(t, res)
			case FaultBadChart:
				checkBadChart(t, res)
			case FaultDeadLearner:
				checkDeadLearner(t, res)
			}
			if t.Failed() {
				t.Logf("timeline:\n%s", out.String())
			}
		})
	}
}

// checkIngressUpgrade checks the ingress-upgrade evidence on its own: the
// add-on hooks started in order; as the webhook was handed over no v1
// controller pod was left on any node (not even terminating) and v2 ran
// ready on every one; the v2 webhook server answered the gate's dry-run
// before the ingresses hook started and admitted every Ingress itself.
func checkIngressUpgrade(t *testing.T, res *Result) {
	t.Helper()
	up := res.AddOnUpgrade
	if up == nil || res.AddOnErr != nil {
		t.Fatalf("add-on upgrade: %v (result %v)", res.AddOnErr, up != nil)
	}
	if got := up.Started(); !slices.Equal(got, ingress.Hooks) {
		t.Errorf("add-on hooks started in the order %v, want %v", got, ingress.Hooks)
	}
	s := up.Snapshots[ingress.HookWebhook]
	if s.Controller["v1"].Live != 0 || s.Controller["v2"].Ready != 3 || s.Controller["v2"].Nodes != 3 {
		t.Errorf("as the webhook hook started: %s, want no v1 controller pod and v2 ready on 3 nodes", s)
	}
	s = up.Snapshots[ingress.HookController]
	if s.Backend["v1"].Live != 0 || s.Backend["v2"].Ready != 1 || s.Controller["v2"].Live != 0 {
		t.Errorf("as the controller hook started: %s, want only the v2 backend, ready, and no v2 controller yet", s)
	}
	ingStart := up.Snapshots[ingress.HookIngresses].At
	probed := false
	admitted := map[string]bool{}
	for _, c := range up.Calls {
		if c.Server != "v2" {
			t.Errorf("admission request to the %s webhook during the upgrade: %+v", c.Server, c)
		}
		probed = probed || (c.DryRun && c.Name == ingress.Probe && !c.At.After(ingStart))
		if !c.DryRun && c.Allowed && c.Operation == "UPDATE" {
			admitted[c.Name] = true
		}
	}
	if !probed {
		t.Errorf("the v2 webhook logged no dry-run before the ingresses hook: %v", up.Calls)
	}
	for _, name := range ingress.Ingresses {
		if !admitted[name] || up.After.Ingresses[name] != "v2" {
			t.Errorf("ingress %s: admitted by v2 %v, at %q after the upgrade", name, admitted[name], up.After.Ingresses[name])
		}
	}
}

// checkBadChart checks the bad-chart evidence on its own: the upgrade
// ended on the install Job's FailedError (FailAfter, not a deadline),
// only install-chart started, and v1 is what runs on every node.
func checkBadChart(t *testing.T, res *Result) {
	t.Helper()
	up := res.AddOnUpgrade
	if up == nil {
		t.Fatal("no add-on upgrade")
	}
	var fe *cnibootstrap.FailedError
	if !errors.As(res.AddOnErr, &fe) {
		t.Fatalf("add-on upgrade error %v, want the install Job's *cnibootstrap.FailedError", res.AddOnErr)
	}
	if fe.Kind != "Job" || fe.Name != ingress.ChartJob || fe.Namespace != "kube-system" || fe.Reason != "FailAfter" ||
		!strings.Contains(fe.Message, "exited with code 1") {
		t.Errorf("failed requirement %+v, want the install Job %s failing with exit code 1", fe, ingress.ChartJob)
	}
	if errors.Is(res.AddOnErr, context.DeadlineExceeded) {
		t.Errorf("the upgrade ended at a deadline: %v", res.AddOnErr)
	}
	if got := up.Started(); !slices.Equal(got, []string{ingress.HookInstallChart}) {
		t.Errorf("add-on hooks started: %v, want only %s", got, ingress.HookInstallChart)
	}
	a := up.After
	if a.Controller["v2"].Live != 0 || a.Controller["v1"].Ready != 3 || a.Backend["v2"].Live != 0 || a.WebhookVersion != "v1" {
		t.Errorf("after the failed upgrade: %s, want v1 untouched and ready on 3 nodes", a)
	}
}

// checkDeadLearner checks the dead-learner evidence on its own: node3 was
// killed once caught up; its join failed with a *etcdmember.StalledError
// whose last reading could not reach it, after etcdmember had reported it
// unreachable; the member list afterwards shows it removed or a learner,
// never a voter; a write through the remaining voters succeeded.
func checkDeadLearner(t *testing.T, res *Result) {
	t.Helper()
	ev := res.DeadLearner
	if ev == nil {
		t.Fatal("no dead-learner evidence")
	}
	if ev.Node != "node3" || ev.ID == 0 || ev.CaughtUp < ev.Target || ev.Target == 0 {
		t.Errorf("killed %s (%x) at applied index %d, voter's %d: want node3, caught up", ev.Node, ev.ID, ev.CaughtUp, ev.Target)
	}
	var stalled *etcdmember.StalledError
	if !errors.As(ev.JoinErr, &stalled) || !errors.Is(ev.JoinErr, etcdmember.ErrLearnerStalled) {
		t.Fatalf("join error %v, want a *etcdmember.StalledError", ev.JoinErr)
	}
	if stalled.Progress.ID != ev.ID || stalled.Progress.Reachable || !stalled.Progress.Started || !ev.Unreachable {
		t.Errorf("stalled reading %+v (unreachable reported: %v), want member %x started and unreachable", stalled.Progress, ev.Unreachable, ev.ID)
	}
	if ev.InList && !ev.IsLearner {
		t.Errorf("member %x is a voter after the join", ev.ID)
	}
	if ev.InList != !ev.CleanedUp {
		t.Errorf("member %x in the list: %v, join says cleaned up: %v", ev.ID, ev.InList, ev.CleanedUp)
	}
	if ev.WriteErr != nil {
		t.Errorf("write through the remaining voters: %v", ev.WriteErr)
	}
	for _, e := range res.Events {
		if e.Node == "node3" && e.Step == "etcd join" && e.Outcome == "ok" {
			t.Errorf("node3's join reported ok: %s", e.Detail)
		}
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{{Members: 0}, {Members: 3, Fault: "nope"}, {Members: 1, Fault: FaultPromoteReplyLost}, {Members: 1, Fault: FaultDeadLearner}} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("Run(%+v) succeeded, want a configuration error", cfg)
		}
	}
}

// eventBefore reports whether an event with outcome first precedes the
// first "started" event of step then.
func eventBefore(events []Event, first, then string) bool {
	seen := false
	for _, e := range events {
		if e.Outcome == first {
			seen = true
		}
		if e.Step == then && e.Outcome == "started" {
			return seen
		}
	}
	return false
}

func findHook(r hooks.Report, name string) hooks.HookReport {
	for _, h := range r.Hooks {
		if h.Name == name {
			return h
		}
	}
	return hooks.HookReport{}
}
