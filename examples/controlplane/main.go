// Command controlplane is kubeboot's main demonstration: a real three-node
// control plane brought up the way a distribution would, with the library's
// five packages composed by an ordinary main.
//
//   - node 1 starts an embedded etcd; nodes 2 and 3 join through
//     etcdmember.Join (learner, started, caught up, promoted);
//   - every node then runs its own real kube-apiserver against its own etcd
//     member, and a hollow kubelet (the real kubelet code over a fake
//     runtime) whose static-pod directory holds the etcd and kube-apiserver
//     manifests of that node, as RKE2 and kubeadm lay a node out: their
//     mirror pods are Ready while the real processes answer their probes.
//     A real kube-controller-manager and kube-scheduler run once;
//   - every node publishes its apiserver's address through apiserverdisco,
//     and every node's agent watches them through its own etcd member;
//   - a hooks runner whose gates are readiness waits (etcd healthy, node 1's
//     static pods Ready, /readyz) runs the bootstrap hooks (RBAC, a CNI's
//     CRD and its ClusterInformation), racing on purpose, while the CNI
//     hook waits on cnibootstrap until its prerequisites are really usable.
//
// It prints a timeline and, at the end, the hooks report and per-phase times.
// --fault replays one incident and shows it absorbed, with evidence read
// from outside the code that injects it (--help lists them). Two of them,
// ingress-upgrade and bad-chart, replay the RKE2 ingress-nginx upgrade (rke2
// #7652): an ingress-nginx-shaped add-on installed at v1 and upgraded to v2
// through a hooks graph gated by cnibootstrap (examples/ingress runs the
// same scenario on its own). --chaos DURATION injects random faults, one at
// a time and within etcd's quorum, while the hooks run again, checking
// invariants throughout; --seed replays a schedule. The Kubernetes binaries
// are the ones the tests use: built on first run (minutes, once), then
// cached.
//
// --timeline FILE.svg also draws the run as a Gantt chart.
//
//	go run ./examples/controlplane [--members N] [--fault NAME | --chaos DURATION [--seed N]] [--json] [--keep] [--timeline FILE.svg]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	var cfg Config
	fs.IntVar(&cfg.Members, "members", 3, "number of etcd members (nodes)")
	fs.StringVar(&cfg.Fault, "fault", "", "replay one incident: "+strings.Join(Faults, ", ")+" (see below)")
	fs.BoolVar(&cfg.JSON, "json", false, "print events and the summary as JSON lines")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the cluster running until Ctrl-C, printing its kubeconfig and etcd endpoints")
	fs.DurationVar(&cfg.Chaos, "chaos", 0, "after the bootstrap, inject random faults for `DURATION` (one at a time, within quorum) while the hooks run again, checking invariants throughout")
	seed := fs.Uint64("seed", 0, "the chaos schedule's seed (0: a random one, printed); the same seed replays the same schedule")
	timeline := fs.String("timeline", "", "write the run as a Gantt chart (SVG) to `FILE.svg`: a lane per node and per hook, gate waits shaded, faults marked, the critical path outlined")
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintln(out, "Usage: controlplane [--members N] [--fault NAME | --chaos DURATION [--seed N]] [--json] [--keep] [--timeline FILE.svg]")
		fmt.Fprintln(out, "\nBrings up a real control plane with kubeboot's packages; --fault replays one incident and shows it absorbed.")
		fmt.Fprintln(out, "\nFlags:")
		fs.PrintDefaults()
		fmt.Fprintln(out, "\nFaults:")
		for _, f := range Faults {
			fmt.Fprintf(out, "  %s\n    \t%s\n", f, FaultHelp[f])
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q (flags only)\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	cfg.Out, cfg.Log = os.Stdout, os.Stderr
	cfg.Seed = *seed
	if cfg.Seed != 0 && cfg.Chaos == 0 {
		fmt.Fprintln(os.Stderr, "--seed needs --chaos")
		return 2
	}
	if cfg.Chaos > 0 && cfg.Seed == 0 {
		cfg.Seed = rand.Uint64()
	}
	if err := cfg.validate(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if *timeline != "" {
		// Find out now, not after the run, that the chart cannot be written.
		f, err := os.OpenFile(*timeline, os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		_ = f.Close()
	}
	if cfg.Chaos > 0 {
		// On stderr, so that --json output stays JSON lines.
		fmt.Fprintf(os.Stderr, "chaos seed %d (replay with --chaos %s --seed %d)\n", cfg.Seed, cfg.Chaos, cfg.Seed)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// A second Ctrl-C is not swallowed: the default handling (exit)
		// comes back once the first has started the teardown.
		<-ctx.Done()
		stop()
	}()
	res, err := Run(ctx, cfg)
	if res == nil { // invalid configuration, or no temporary directory
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	printSummary(os.Stdout, res, err, cfg.JSON)
	if *timeline != "" {
		if werr := writeTimelineFile(*timeline, res, cfg.Fault); werr != nil {
			fmt.Fprintln(os.Stderr, werr)
			return 1
		}
	}
	if err != nil {
		return 1
	}
	return 0
}

// writeTimelineFile writes the run's Gantt chart to path, even for a run
// that failed (its picture is the one worth reading).
func writeTimelineFile(path string, res *Result, fault string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--timeline: %w", err)
	}
	if err := WriteTimelineSVG(f, res, chartTitle(fault)); err != nil {
		_ = f.Close()
		return fmt.Errorf("--timeline %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("--timeline %s: %w", path, err)
	}
	return nil
}

// chartTitle heads the chart of a run with fault ("" for none).
func chartTitle(fault string) string {
	if fault == FaultNone {
		return "kubeboot control plane"
	}
	return "kubeboot control plane, --fault " + fault
}
