package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/kubeboot/kubeboot/cnibootstrap"
	"github.com/kubeboot/kubeboot/examples/internal/ingress"
)

// addOnFault reports whether the fault is one of the ingress-nginx upgrade
// replays, which need the node side of the cluster.
func addOnFault(f string) bool { return f == FaultIngressUpgrade || f == FaultBadChart }

// addOn installs the ingress-nginx-shaped add-on at v1 in kube-system and
// upgrades it to v2 through the hooks graph of examples/internal/ingress,
// whose gates are cnibootstrap waits. With ingress-upgrade the upgrade must
// succeed, and the evidence read from outside the waits — the cluster as
// each hook started, the webhook server's own request log — must show it in
// order (Result.CheckOrder). With bad-chart the v2 install Job fails every
// attempt: the upgrade must stop on the Job's *cnibootstrap.FailedError,
// not a deadline, with nothing after it run and v1 untouched
// (Result.CheckStoppedAtChart). Either way the fault is then observed.
func (d *demo) addOn(ctx context.Context) error {
	kube, err := d.api.Clientset()
	if err != nil {
		return err
	}
	clients, err := cnibootstrap.NewClients(d.api.Config())
	if err != nil {
		return err
	}
	addon, err := ingress.New(ingress.Options{Namespace: "kube-system", Kube: kube, Clients: clients, CA: d.api.CA(),
		Dir: filepath.Join(d.dir, "addon"), Record: func(step, outcome, detail string) { d.tl.Record("addon", step, outcome, detail) }})
	if err != nil {
		return err
	}
	defer addon.Close()
	nodes := len(d.live())
	install, err := addon.Apply(ctx, ingress.Release{Version: "v1"})
	d.res.AddOnInstall = install
	if err != nil {
		return fmt.Errorf("installing ingress-nginx v1: %w", err)
	}
	if err := install.CheckOrder(nodes); err != nil {
		return fmt.Errorf("installing ingress-nginx v1, the evidence: %w", err)
	}
	rel := ingress.Release{Version: "v2"}
	if d.cfg.Fault == FaultBadChart {
		rel.ChartExitCode = 1
		d.tl.Record("addon", "fault", "injected", "upgrade to v2 with a chart that fails to render: the install Job exits 1 every attempt, backoffLimit 1000 (rke2 #7652)")
	} else {
		d.tl.Record("addon", "fault", "injected", "ingress-nginx v1 → v2 upgrade while v1 serves: default backend, controller DaemonSet and admission webhook replaced (rke2 #7652)")
	}
	up, upErr := addon.Apply(ctx, rel)
	d.res.AddOnUpgrade, d.res.AddOnErr = up, upErr
	switch d.cfg.Fault {
	case FaultIngressUpgrade:
		if upErr != nil {
			return fmt.Errorf("upgrading ingress-nginx to v2: %w", upErr)
		}
		if err := up.CheckOrder(nodes); err != nil {
			return fmt.Errorf("upgrading ingress-nginx to v2, the evidence: %w", err)
		}
		d.tl.Record("addon", "fault", "observed", fmt.Sprintf("in order: install Job complete → v2 default backend the only one, ready → no v1 controller pod left on %d nodes → v2 webhook answered the dry-run → %d Ingresses admitted by it",
			nodes, len(ingress.Ingresses)))
	case FaultBadChart:
		if upErr == nil {
			return errors.New("the upgrade with a chart that fails to render succeeded")
		}
		fe, err := up.CheckStoppedAtChart(upErr, "v1", nodes)
		if err != nil {
			return fmt.Errorf("upgrade with a bad chart, the evidence: %w (upgrade error: %v)", err, upErr)
		}
		d.tl.Record("addon", "fault", "observed", fmt.Sprintf("upgrade stopped at once on %v; nothing after it ran; v1 untouched: %s", fe, up.After))
	}
	d.res.FaultObserved = true
	return nil
}
