package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	clientv3 "go.etcd.io/etcd/client/v3"

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
)

// Faults lists every valid --fault value.
var Faults = []string{FaultPromoteReplyLost, FaultAPIServerRestart, FaultEmptyAddresses, FaultCalicoRace}

// Config is what the flags set.
type Config struct {
	// Members is the number of etcd members (nodes); at least 1.
	Members int
	// Fault is one of Faults, or "" for the plain run.
	Fault string
	// JSON prints events and the summary as JSON lines.
	JSON bool
	// Keep leaves the cluster running until ctx ends, printing how to reach it.
	Keep bool
	// Out receives the timeline and summary; Log receives progress notes
	// such as the one-time kube-apiserver build.
	Out, Log io.Writer
}

// Result is the end state of a run, for the summary and for tests.
type Result struct {
	// Voters is the number of voting etcd members at the end.
	Voters int
	// Learners is the number of learners left at the end (0 on success).
	Learners int
	// Addresses is what the node agent's watcher holds at the end.
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
}

func (c Config) validate() error {
	if c.Members < 1 {
		return fmt.Errorf("--members must be at least 1, got %d", c.Members)
	}
	if c.Fault == FaultPromoteReplyLost && c.Members < 2 {
		return fmt.Errorf("--fault %s needs --members of at least 2 (a learner to promote)", c.Fault)
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

// demo holds the running parts of one run.
type demo struct {
	cfg    Config
	tl     *Timeline
	ph     phases
	dir    string
	etcd   *testenv.Cluster
	client *clientv3.Client // node 1's view of the cluster (all endpoints)
	api    *testenv.APIServer
	res    Result
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
	d.ph.begin()
	if err := d.startEtcd(ctx); err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	d.ph.end("etcd node1")
	if err := d.joinMembers(ctx); err != nil {
		return fmt.Errorf("etcd join: %w", err)
	}
	d.ph.end("etcd join")
	if err := d.startAPIServer(ctx); err != nil {
		return fmt.Errorf("kube-apiserver: %w", err)
	}
	d.ph.end("kube-apiserver")
	agent, err := d.discover(ctx)
	if err != nil {
		return fmt.Errorf("address discovery: %w", err)
	}
	defer agent.close()
	d.ph.end("address discovery")
	if err := d.bootstrap(ctx); err != nil {
		return fmt.Errorf("bootstrap hooks: %w", err)
	}
	d.ph.end("bootstrap hooks")
	if err := d.verify(ctx, agent); err != nil {
		return err
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

// teardown stops the apiserver before etcd and removes the run's directory.
func (d *demo) teardown() {
	if d.api != nil {
		_ = d.api.Close()
	}
	if d.etcd != nil {
		_ = d.etcd.Close()
	}
	_ = os.RemoveAll(d.dir)
}
