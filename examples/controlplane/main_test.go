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
	// TestChaos kills embedded etcd members mid-request.
	goleak.VerifyTestMain(m, append(testenv.LeakOptions(), testenv.IgnoreKilledEtcdPeerHandler())...)
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
			wantVoters, wantAddrs := 3, 3
			switch fault {
			case FaultDeadLearner:
				wantVoters, wantAddrs = 2, 2 // node3 was not promoted, and its join removed it
			case FaultNodeLoss:
				wantAddrs = 2 // the lost node stays a voter that does not answer
			}
			if res.Voters != wantVoters || res.Learners != 0 {
				t.Errorf("voters %d learners %d, want %d and 0", res.Voters, res.Learners, wantVoters)
			}
			if len(res.Addresses) != wantAddrs {
				t.Errorf("agent addresses %v, want %d apiservers", res.Addresses, wantAddrs)
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
			case FaultStaticPodUpgrade:
				checkStaticPodUpgrade(t, res)
			case FaultNodeLoss:
				checkNodeLoss(t, res)
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

// checkStaticPodUpgrade checks the static-pod-upgrade evidence on its own:
// a new kube-apiserver process and a new mirror pod (hash and UID), Ready;
// the gate held at least once on the old mirror pod while the new process
// served or was coming up; every hook attempt started against the new
// process with the new mirror pod Ready.
func checkStaticPodUpgrade(t *testing.T, res *Result) {
	t.Helper()
	ev := res.StaticPodUpgrade
	if ev == nil {
		t.Fatal("no static-pod-upgrade evidence")
	}
	if ev.Node != "node1" || ev.OldPID == 0 || ev.NewPID == 0 || ev.OldPID == ev.NewPID {
		t.Errorf("node %s, process %d → %d: want node1 and a new process", ev.Node, ev.OldPID, ev.NewPID)
	}
	if ev.OldHash == "" || ev.NewHash == "" || ev.OldHash == ev.NewHash || ev.OldUID == ev.NewUID {
		t.Errorf("mirror pod hash %q → %q, uid %s → %s: want a new mirror pod", ev.OldHash, ev.NewHash, ev.OldUID, ev.NewUID)
	}
	if len(ev.Attempts) < len(res.Hooks.Hooks) {
		t.Errorf("%d hook attempts recorded, want at least one per hook (%d)", len(ev.Attempts), len(res.Hooks.Hooks))
	}
	for _, s := range ev.Attempts {
		if s.Err != nil || s.PID != ev.NewPID || s.Hash != ev.NewHash || !s.Ready {
			t.Errorf("hook %s started against process %d (new %d), mirror pod hash %q Ready %v, err %v", s.Hook, s.PID, ev.NewPID, s.Hash, s.Ready, s.Err)
		}
	}
	if ev.HeldOnOldPod == 0 {
		t.Error("the gate never held on the old mirror pod: the new apiserver served before the kubelet replaced it, and that is the window under test")
	}
	t.Logf("mirror pod replaced after %s, Ready after %s; gate held %d attempt(s) on the old pod", ev.MirrorReplaced, ev.MirrorReady, ev.HeldOnOldPod)
}

// checkNodeLoss checks the node-loss evidence on its own: a node other
// than node1 was lost; each remaining agent was handed a set without its
// address within the TTL plus debounce; the remaining members took a
// write; the remaining apiservers and Nodes were ready.
func checkNodeLoss(t *testing.T, res *Result) {
	t.Helper()
	ev := res.NodeLoss
	if ev == nil {
		t.Fatal("no node-loss evidence")
	}
	if ev.Node == "node1" || ev.Node == "" {
		t.Errorf("lost node %q, want node2 or node3", ev.Node)
	}
	if len(ev.Removed) != 2 {
		t.Errorf("removal seen by %v, want both remaining agents", ev.Removed)
	}
	for node, took := range ev.Removed {
		if took <= 0 || took > ev.Bound {
			t.Errorf("%s's agent dropped %s after %s, want within %s", node, ev.Address, took, ev.Bound)
		}
	}
	if slices.Contains(res.Addresses, ev.Address) {
		t.Errorf("the lost address %s is still in %v", ev.Address, res.Addresses)
	}
	if ev.WriteErr != nil || len(ev.NotReady) != 0 {
		t.Errorf("after the loss: write %v, not ready %v", ev.WriteErr, ev.NotReady)
	}
	t.Logf("%s's address %s left the remaining agents after %v (bound %s)", ev.Node, ev.Address, ev.Removed, ev.Bound)
}

func TestRunRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{{Members: 0}, {Members: 3, Fault: "nope"}, {Members: 1, Fault: FaultPromoteReplyLost}, {Members: 1, Fault: FaultDeadLearner}, {Members: 2, Fault: FaultNodeLoss}} {
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
