// Command ingress replays incident 4, the RKE2 v1.31.4 → v1.31.5 upgrade of
// the bundled ingress-nginx (rke2 #7652), on real servers: a kube-apiserver,
// kube-controller-manager, kube-scheduler and hollow kubelets (the harness
// of internal/testenv; no container runs, the example serves what the pods
// would on 127.0.0.1).
//
// It installs an ingress-nginx-shaped add-on at v1 — a helm-install Job,
// a default-backend Deployment and Service, a controller DaemonSet, an
// admission webhook the example serves itself (a URL-based
// ValidatingWebhookConfiguration on https://127.0.0.1 with a certificate
// from the harness CA, which the kube-apiserver calls) and two Ingress
// objects — and upgrades it to v2 with a hooks graph whose gates are
// cnibootstrap waits:
//
//	install-chart → default-backend → controller → webhook → ingresses
//
// each released only when the one before has really taken effect: the
// install Job complete; the default backend rolled out and its Service
// with a ready endpoint; the controller rolled out on every node with no
// old pod left; the webhook answering a dry-run Ingress create. As each
// hook starts, the example reads the cluster on its own and prints it, and
// at the end checks the order from that evidence and from the webhook
// server's own request log.
//
// --bad-chart replays the trigger: the v2 install Job fails every attempt
// (a chart that fails to render, under helm-controller's backoffLimit of
// 1000, so the Job itself never says Failed). The wait for it ends on the
// second failure it counts (the second exit, seen while the kubelet is
// still backing off before the next restart), naming the Job and its
// failures — not at its
// 5-minute timeout — nothing after it runs, and v1 keeps serving. The
// program then exits 1: the upgrade failed, and says so at once.
//
//	go run ./examples/ingress [--nodes N] [--bad-chart] [--gate-timeout 5m]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/kubeboot/kubeboot/cnibootstrap"
	"github.com/kubeboot/kubeboot/examples/internal/ingress"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "ingress:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

// config is what the flags set.
type config struct {
	nodes       int
	badChart    bool
	gateTimeout time.Duration
}

func parse(args []string, log io.Writer) (config, error) {
	fs := flag.NewFlagSet("ingress", flag.ContinueOnError)
	fs.SetOutput(log)
	var c config
	fs.IntVar(&c.nodes, "nodes", 3, "number of nodes (hollow kubelets); the controller DaemonSet runs one pod on each")
	fs.BoolVar(&c.badChart, "bad-chart", false, "replay rke2 #7652: the v2 install Job fails every attempt; the upgrade must stop at once, v1 untouched")
	fs.DurationVar(&c.gateTimeout, "gate-timeout", ingress.DefaultGateTimeout, "bound on each gate's wait (helm-controller's default --timeout is 5m)")
	if err := fs.Parse(args); err != nil {
		return c, fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("%w: unexpected arguments %v", errUsage, fs.Args())
	}
	if c.nodes < 1 {
		return c, fmt.Errorf("%w: --nodes must be at least 1, got %d", errUsage, c.nodes)
	}
	if c.gateTimeout <= 0 {
		return c, fmt.Errorf("%w: --gate-timeout must be positive, got %s", errUsage, c.gateTimeout)
	}
	return c, nil
}

func run(ctx context.Context, args []string, out, log io.Writer) error {
	cfg, err := parse(args, log)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(log, "starting kube-apiserver, controller-manager, scheduler and %d hollow kubelet(s) (built on first use, then cached)\n", cfg.nodes)
	c, err := startCluster(ctx, cfg.nodes, log)
	if err != nil {
		return err
	}
	defer c.close()
	o, err := scenario(ctx, c, "kube-system", cfg, out)
	if o != nil {
		o.close()
	}
	return err
}

// cluster is the harness the add-on runs on.
type cluster struct {
	dir     string
	api     *testenv.APIServer
	cp      *testenv.ControlPlane
	nodes   []*testenv.Node
	kube    kubernetes.Interface
	clients cnibootstrap.Clients
}

func startCluster(ctx context.Context, nodes int, log io.Writer) (_ *cluster, err error) {
	dir, err := os.MkdirTemp("", "kubeboot-ingress-")
	if err != nil {
		return nil, err
	}
	c := &cluster{dir: dir}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	logf := func(format string, args ...any) { fmt.Fprintf(log, format+"\n", args...) }
	if c.api, err = testenv.StartAPIServer(ctx, testenv.WithAPIServerDir(filepath.Join(dir, "api")), testenv.WithBuildLog(logf)); err != nil {
		return nil, fmt.Errorf("kube-apiserver: %w", err)
	}
	if c.cp, err = testenv.StartControlPlane(ctx, c.api, testenv.WithControlPlaneDir(filepath.Join(dir, "cp")), testenv.WithControlPlaneBuildLog(logf)); err != nil {
		return nil, fmt.Errorf("controller-manager and scheduler: %w", err)
	}
	names := make([]string, nodes)
	for i := range names {
		names[i] = fmt.Sprintf("node%d", i+1)
	}
	if c.nodes, err = testenv.StartNodes(ctx, c.api, names, testenv.WithNodeDir(filepath.Join(dir, "nodes")), testenv.WithNodeBuildLog(logf)); err != nil {
		return nil, fmt.Errorf("nodes: %w", err)
	}
	if c.kube, err = c.api.Clientset(); err != nil {
		return nil, err
	}
	if c.clients, err = cnibootstrap.NewClients(c.api.Config()); err != nil {
		return nil, err
	}
	return c, nil
}

// close stops the nodes, the control plane and the apiserver, in that
// order, and removes the directory.
func (c *cluster) close() {
	for _, n := range c.nodes {
		_ = n.Close()
	}
	if c.cp != nil {
		_ = c.cp.Close()
	}
	if c.api != nil {
		_ = c.api.Close()
	}
	_ = os.RemoveAll(c.dir)
}

// outcome is what the scenario did: the v1 install and the v2 upgrade.
type outcome struct {
	// addon runs the webhook server of the release that serves; close
	// stops it.
	addon            *ingress.Addon
	install, upgrade *ingress.Result
	// upgradeErr is the upgrade's error (the bad chart's).
	upgradeErr error
}

// scenario installs the add-on at v1 in namespace ns (which must exist),
// upgrades it to v2 (with a chart that fails to render if cfg.badChart),
// prints the timeline, the evidence and the hooks report to out, and checks
// the outcome from the evidence. The caller closes the outcome (when not
// nil) to stop the add-on's servers. It returns nil for a good upgrade that
// happened in order; for a bad chart, an error wrapping the upgrade's (the
// install Job's *cnibootstrap.FailedError) once the evidence shows that the
// upgrade stopped at the Job and v1 is untouched. Any other failure is an
// error too.
func scenario(ctx context.Context, c *cluster, ns string, cfg config, out io.Writer) (*outcome, error) {
	start := time.Now()
	var mu sync.Mutex
	record := func(step, result, detail string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, "%7d ms  %-20s %-14s %s\n", time.Since(start).Milliseconds(), step, result, detail)
	}
	dir, err := os.MkdirTemp(c.dir, "addon-")
	if err != nil {
		return nil, err
	}
	addon, err := ingress.New(ingress.Options{Namespace: ns, Kube: c.kube, Clients: c.clients, CA: c.api.CA(),
		Dir: dir, Record: record, GateTimeout: cfg.gateTimeout})
	if err != nil {
		return nil, err
	}
	o := &outcome{addon: addon}
	fmt.Fprintf(out, "== install v1 (%s, %d nodes)\n", ns, len(c.nodes))
	o.install, err = addon.Apply(ctx, ingress.Release{Version: "v1"})
	printReport(out, o.install)
	if err != nil {
		return o, fmt.Errorf("installing v1: %w", err)
	}
	if err := o.install.CheckOrder(len(c.nodes)); err != nil {
		return o, fmt.Errorf("installing v1, the evidence: %w", err)
	}
	v2 := ingress.Release{Version: "v2"}
	title := "upgrade to v2"
	if cfg.badChart {
		v2.ChartExitCode = 1
		title += " with a chart that fails to render (rke2 #7652)"
	}
	fmt.Fprintf(out, "\n== %s\n", title)
	o.upgrade, o.upgradeErr = addon.Apply(ctx, v2)
	printReport(out, o.upgrade)
	if !cfg.badChart {
		if o.upgradeErr != nil {
			return o, fmt.Errorf("upgrading to v2: %w", o.upgradeErr)
		}
		if err := o.upgrade.CheckOrder(len(c.nodes)); err != nil {
			return o, fmt.Errorf("upgrading to v2, the evidence: %w", err)
		}
		fmt.Fprintf(out, "\nOK: v2 rolled out in order on %d nodes; every Ingress validated by the v2 webhook (%d admission requests)\n",
			len(c.nodes), len(o.upgrade.Calls))
		return o, nil
	}
	if o.upgradeErr == nil {
		return o, errors.New("the upgrade with a bad chart succeeded")
	}
	fe, err := o.upgrade.CheckStoppedAtChart(o.upgradeErr, "v1", len(c.nodes))
	if err != nil {
		return o, fmt.Errorf("upgrade with a bad chart, the evidence: %w (upgrade error: %v)", err, o.upgradeErr)
	}
	fmt.Fprintf(out, "\nSTOPPED: %v\n  v1 untouched: %s\n", fe, o.upgrade.After)
	return o, fmt.Errorf("upgrading to v2 failed at once, before touching v1: %w", o.upgradeErr)
}

// close stops the add-on's servers.
func (o *outcome) close() { _ = o.addon.Close() }

// printReport prints the hooks report as a table.
func printReport(out io.Writer, r *ingress.Result) {
	if r == nil || len(r.Report.Hooks) == 0 {
		return
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  HOOK\tSTATE\tATTEMPTS\tGATE WAIT\tRUNNING\tHELD BY")
	for _, h := range r.Report.Hooks {
		held := r.Held[h.Name]
		if len(held) > 90 {
			held = held[:87] + "..."
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%d ms\t%d ms\t%s\n", h.Name, h.State, h.Attempts, h.GateWait.Milliseconds(), h.Running.Milliseconds(), held)
	}
	_ = tw.Flush()
	fmt.Fprintf(out, "  critical path: %s\n", strings.Join(r.Report.CriticalPath, " → "))
}
