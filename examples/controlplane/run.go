package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubeboot/kubeboot/examples/internal/ingress"
	"github.com/kubeboot/kubeboot/hooks"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// Faults that --fault can replay, each one of the incidents kubeboot exists
// to absorb.
const (
	FaultNone             = ""
	FaultPromoteReplyLost = "promote-reply-lost"
	FaultAPIServerRestart = "apiserver-restart"
	FaultEmptyAddresses   = "empty-addresses"
	FaultCalicoRace       = "calico-race"
	FaultIngressUpgrade   = "ingress-upgrade"
	FaultBadChart         = "bad-chart"
	FaultDeadLearner      = "dead-learner"
	FaultStaticPodUpgrade = "static-pod-upgrade"
	FaultNodeLoss         = "node-loss"
)

// Faults lists every valid --fault value.
var Faults = []string{FaultStaticPodUpgrade, FaultPromoteReplyLost, FaultAPIServerRestart, FaultEmptyAddresses, FaultCalicoRace, FaultIngressUpgrade, FaultBadChart, FaultDeadLearner, FaultNodeLoss}

// FaultHelp says what each fault replays and what absorbing it looks like.
var FaultHelp = map[string]string{
	FaultStaticPodUpgrade: "as the bootstrap hooks start, node1's kube-apiserver manifest is rewritten (a new generation) and its process restarted, as an RKE2 upgrade does (rke2 #8269); " +
		"the hooks, gated on node1's static pods (the new mirror pod, Ready) and /readyz, hold until the kubelet has replaced the mirror pod and the new process serves; every hook attempt then started saw the new process and the new mirror pod",
	FaultPromoteReplyLost: "node 2 joins through a proxy that drops MemberPromote replies until one that etcd applied has lost its reply (kubeadm #3317); the join confirms the promotion from the member list instead of failing",
	FaultAPIServerRestart: "the kube-apiserver restarts while the bootstrap hooks run (rke2 #8269); the hook that failed on it waits on its gate and succeeds on its second attempt",
	FaultEmptyAddresses:   "the node agent loses etcd for longer than a backoff cycle (k3s #11934); it keeps its apiserver address, never gets an empty set, and resumes",
	FaultCalicoRace:       "Calico's objects are created in the worst order, ClusterInformation not ready at first (rke2 #7808); the CNI hook starts only when all are usable",
	FaultIngressUpgrade: "starts kube-controller-manager, kube-scheduler and a hollow kubelet per node, installs an ingress-nginx-shaped add-on at v1 and upgrades it to v2 " +
		"(rke2 #7652's upgrade): install Job complete → default backend rolled out → controller rolled out, no old pod left → webhook serving → Ingresses applied, checked from the cluster and the webhook's own log",
	FaultBadChart: "as ingress-upgrade, but the v2 install Job fails every attempt (rke2 #7652's trigger, backoffLimit 1000); the upgrade stops on its second failure " +
		"with an error naming the Job, not at the 5-minute timeout, and nothing after it runs: v1 keeps serving",
	FaultDeadLearner: "the last joining node's etcd is killed right after it caught up; the join does not promote it, reports it stalled and unreachable " +
		"(stall timeout 3 s) and removes it; the member list shows it gone or still a learner, and a write through the remaining voters succeeds",
	FaultNodeLoss: "after the bootstrap, a whole control-plane node (the last one not leading etcd) is killed: its etcd, kube-apiserver and kubelet at once, its address registration stopped; " +
		"its address leaves every remaining agent's set within the lease TTL (plus etcd's 0.5 s expiry check and the watcher's debounce), no set is ever empty, etcd keeps quorum and the remaining apiservers stay ready",
}

// Config is what the flags set.
type Config struct {
	// Members is the number of control-plane nodes (etcd members), 1 to 7.
	Members int
	// Fault is one of Faults, or "" for the plain run.
	Fault string
	// JSON prints events and the summary as JSON lines.
	JSON bool
	// Keep leaves the cluster running until ctx ends, printing how to reach it.
	Keep bool
	// Chaos, when positive, runs a chaos phase of that length after the
	// bootstrap: faults drawn from ChaosFaults by Seed's schedule
	// (ChaosSchedule), one at a time, each while the bootstrap hooks run
	// again, with the invariants checked throughout (see ChaosReport).
	// It needs Members ≥ 3 and no Fault.
	Chaos time.Duration
	// Seed is the chaos schedule's seed; the same seed replays the same
	// schedule.
	Seed uint64
	// Out receives the timeline and summary; Log receives progress notes
	// such as the one-time kube-apiserver build.
	Out, Log io.Writer
}

// Result is the end state of a run, for the summary and for tests.
type Result struct {
	// Voters is the number of voting etcd members at the end: Members, or
	// one fewer under dead-learner (under node-loss the lost node's member
	// is still a voter, one that does not answer).
	Voters int
	// Learners is the number of learners left at the end (0 on success).
	Learners int
	// Addresses is what every live node's agent holds at the end (after
	// the chaos, with Chaos): the live apiservers' addresses, sorted.
	Addresses []string
	// Hooks is the hook runner's report.
	Hooks hooks.Report
	// Phases are the run's phases and their durations.
	Phases []Phase
	// Events is the whole timeline.
	Events []Event
	// FaultObserved says the injected fault really happened (always true
	// without a fault).
	FaultObserved bool
	// AddOnInstall and AddOnUpgrade are the ingress-nginx add-on's v1
	// install and v2 upgrade (ingress-upgrade and bad-chart only), and
	// AddOnErr the upgrade's error: the install Job's failure under
	// bad-chart, which the demo absorbs.
	AddOnInstall, AddOnUpgrade *ingress.Result
	AddOnErr                   error
	// DeadLearner is the dead-learner fault's evidence (nil otherwise).
	DeadLearner *DeadLearner
	// StaticPodUpgrade is the static-pod-upgrade fault's evidence (nil
	// otherwise).
	StaticPodUpgrade *StaticPodUpgrade
	// NodeLoss is the node-loss fault's evidence (nil otherwise).
	NodeLoss *NodeLoss
	// Chaos is the chaos run's report (nil without --chaos).
	Chaos *ChaosReport
}

func (c Config) validate() error {
	if c.Members < 1 || c.Members > 7 {
		return fmt.Errorf("--members must be between 1 and 7 (etcd's recommended maximum), got %d", c.Members)
	}
	if (c.Fault == FaultPromoteReplyLost || c.Fault == FaultDeadLearner) && c.Members < 2 {
		return fmt.Errorf("--fault %s needs --members of at least 2 (a learner to join)", c.Fault)
	}
	if c.Fault == FaultNodeLoss && c.Members < 3 {
		return fmt.Errorf("--fault %s needs --members of at least 3 (losing one of fewer loses etcd's quorum)", c.Fault)
	}
	if c.Chaos < 0 {
		return fmt.Errorf("--chaos must not be negative, got %s", c.Chaos)
	}
	if c.Chaos > 0 && (c.Members < 3 || c.Fault != FaultNone) {
		return fmt.Errorf("--chaos needs --members of at least 3 (its faults stay within etcd's quorum) and no --fault, got --members %d --fault %q", c.Members, c.Fault)
	}
	if c.Fault == FaultNone {
		return nil
	}
	for _, f := range Faults {
		if c.Fault == f {
			return nil
		}
	}
	return fmt.Errorf("unknown --fault %q (valid: %v)", c.Fault, Faults)
}

// phaseControlPlane is the phase that starts every node's kube-apiserver
// and kubelet (with its static pods) and the controllers.
const phaseControlPlane = "control plane"

// demo holds the running parts of one run.
type demo struct {
	cfg    Config
	tl     *Timeline
	ph     phases
	dir    string
	etcd   *testenv.Cluster
	client *clientv3.Client   // node 1's view of the cluster: every member that joined
	api    *testenv.APIServer // node 1's
	cp     *testenv.ControlPlane
	nodes  []*cpNode
	res    Result
	// chaosRemovedAt is the raft index of the last spare's removal in a
	// chaos run.
	chaosRemovedAt uint64
	chaosMon       *chaosMonitor
}

// Run brings up the control plane as described in the package doc and
// tears everything down before it returns.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "kubeboot-controlplane-")
	if err != nil {
		return nil, err
	}
	d := &demo{cfg: cfg, tl: NewTimeline(cfg.Out, cfg.JSON), dir: dir}
	d.res.FaultObserved = cfg.Fault == FaultNone
	defer d.teardown()

	err = d.run(ctx)
	d.res.Phases = d.ph.all()
	d.res.Events = d.tl.Events()
	if err == nil && !d.res.FaultObserved {
		err = fmt.Errorf("fault %s was requested but never happened", cfg.Fault)
	}
	return &d.res, err
}

func (d *demo) run(ctx context.Context) error {
	d.ph.begin(d.tl.start)
	if err := d.startEtcd(ctx); err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	d.ph.end("etcd node1")
	if err := d.joinMembers(ctx); err != nil {
		return fmt.Errorf("etcd join: %w", err)
	}
	d.client.SetEndpoints(d.runningEndpoints()...) // node 1's view: every member
	d.ph.end("etcd join")
	if err := d.startControlPlane(ctx); err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	d.ph.end(phaseControlPlane)
	if err := d.discover(ctx); err != nil {
		return fmt.Errorf("address discovery: %w", err)
	}
	d.ph.end("address discovery")
	if err := d.bootstrap(ctx); err != nil {
		return fmt.Errorf("bootstrap hooks: %w", err)
	}
	d.ph.end("bootstrap hooks")
	if addOnFault(d.cfg.Fault) {
		if err := d.addOn(ctx); err != nil {
			return fmt.Errorf("add-on: %w", err)
		}
		d.ph.end("add-on upgrade")
	}
	if d.cfg.Fault == FaultNodeLoss {
		if err := d.loseNode(ctx); err != nil {
			return fmt.Errorf("node loss: %w", err)
		}
		d.ph.end("node loss")
	}
	if err := d.verify(ctx); err != nil {
		return err
	}
	if d.cfg.Chaos > 0 {
		if err := d.chaos(ctx); err != nil {
			return err
		}
		d.ph.end("chaos")
		// The end state is the state after the chaos.
		if err := d.verify(ctx); err != nil {
			return fmt.Errorf("after the chaos: %w", err)
		}
	}
	if d.cfg.Keep {
		return d.keep(ctx)
	}
	return nil
}

// keep prints how to reach the cluster and waits for ctx to end (Ctrl-C).
func (d *demo) keep(ctx context.Context) error {
	kubeconfig := filepath.Join(d.dir, "kubeconfig")
	if err := d.api.Kubeconfig(kubeconfig); err != nil {
		return err
	}
	fmt.Fprintf(d.cfg.Out, "\ncluster kept running; press Ctrl-C to stop and clean up\n  KUBECONFIG=%s\n  etcd endpoints: %v\n", kubeconfig, d.etcd.Endpoints())
	<-ctx.Done()
	if errors.Is(ctx.Err(), context.Canceled) {
		return nil
	}
	return ctx.Err()
}

// teardown stops the agents, registrations and kubelets, the controllers,
// then the apiservers, then etcd, and removes the run's directory.
func (d *demo) teardown() {
	d.closeNodes()
	if d.etcd != nil {
		_ = d.etcd.Close()
	}
	_ = os.RemoveAll(d.dir)
}
