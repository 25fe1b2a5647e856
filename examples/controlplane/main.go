// Command controlplane is kubeboot's main demonstration: a real three-node
// control plane brought up the way a distribution would, with the library's
// five packages composed by an ordinary main.
//
//   - node 1 starts an embedded etcd; nodes 2 and 3 join through
//     etcdmember.Join (learner, started, caught up, promoted);
//   - a real kube-apiserver starts against the cluster and publishes its
//     address through apiserverdisco; a node agent's watcher waits for it;
//   - a hooks runner whose gates are readiness waits runs the bootstrap
//     hooks (RBAC, a CNI's CRD and its ClusterInformation), racing on
//     purpose, while the CNI hook waits on cnibootstrap until its
//     prerequisites are really usable.
//
// It prints a timeline and, at the end, the hooks report and per-phase times.
// --fault replays one incident and shows it absorbed, with evidence read
// from outside the code that injects it (--help lists them). Two of them,
// ingress-upgrade and bad-chart, replay the RKE2 ingress-nginx upgrade (rke2
// #7652): they also start the node side against node 1's apiserver — a real
// kube-controller-manager and kube-scheduler, and a hollow kubelet per node
// — and install an ingress-nginx-shaped add-on at v1 and upgrade it to v2
// through a hooks graph gated by cnibootstrap (examples/ingress runs the same
// scenario on its own). The kube-apiserver and the node components are the
// binaries the tests use: built on first run (minutes, once), then cached.
//
// --timeline FILE.svg also draws the run as a Gantt chart.
//
//	go run ./examples/controlplane [--members N] [--fault NAME] [--json] [--keep] [--timeline FILE.svg]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
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
	timeline := fs.String("timeline", "", "write the run as a Gantt chart (SVG) to `FILE.svg`: a lane per node and per hook, gate waits shaded, faults marked, the critical path outlined")
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintln(out, "Usage: controlplane [--members N] [--fault NAME] [--json] [--keep] [--timeline FILE.svg]")
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
	cfg.Out, cfg.Log = os.Stdout, os.Stderr

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := Run(ctx, cfg)
	if res == nil { // invalid configuration
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
