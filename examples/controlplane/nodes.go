package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	"github.com/kubeboot/kubeboot/apiserverdisco"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// cpNode is one control-plane node, laid out as RKE2 and kubeadm lay one
// out: its etcd member; its own kube-apiserver, talking to that member only
// (--etcd-servers is the local member, as both do); a kubelet whose
// static-pod directory holds the etcd and kube-apiserver manifests of the
// processes the demo runs for it; the registration of its apiserver's
// address; and a node agent watching the addresses through the node's own
// etcd member.
type cpNode struct {
	name    string
	member  *testenv.Member
	api     *testenv.APIServer
	kubelet *testenv.Node
	// etcd is a client of the node's own member only: what the node's
	// publisher and agent use.
	etcd *clientv3.Client
	// stop ends the node's registration (its lease then expires) and agent.
	ctx   context.Context
	stop  context.CancelFunc
	reg   *apiserverdisco.Registration
	agent *agent
	// generation counts the apiserver manifests written (1 at start, 2
	// after a static-pod upgrade).
	generation int
	// lost is set when node-loss killed the node.
	lost bool
}

// live returns the nodes not lost.
func (d *demo) live() []*cpNode {
	var out []*cpNode
	for _, n := range d.nodes {
		if !n.lost {
			out = append(out, n)
		}
	}
	return out
}

// startControlPlane starts, on every node whose etcd member runs (all of
// them, unless dead-learner removed one), its kube-apiserver, and then its
// kubelet with the static-pod manifests of the node's etcd and apiserver;
// and, once, a real kube-controller-manager and kube-scheduler against node
// 1's apiserver. Node 1's apiserver starts first, because the others share
// its credentials (one CA, one service-account key, as peers do); the rest
// start in parallel. It returns when every apiserver answers /readyz and
// every kubelet's Node is Ready.
func (d *demo) startControlPlane(ctx context.Context) error {
	logf := func(format string, args ...any) { fmt.Fprintf(d.cfg.Log, format+"\n", args...) }
	for _, m := range d.etcd.Members() {
		if !m.Running() {
			continue
		}
		cli, err := d.etcd.NewClient(m.ClientURL)
		if err != nil {
			return err
		}
		nctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		d.nodes = append(d.nodes, &cpNode{name: m.Name, member: m, etcd: cli, ctx: nctx, stop: stop})
	}
	if len(d.nodes) == 0 || d.nodes[0].name != "node1" {
		return errors.New("node1's etcd member is not running")
	}
	first := d.nodes[0]
	if err := d.startNodeAPIServer(ctx, first, logf); err != nil {
		return err
	}
	d.api = first.api
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		d.tl.Record("node1", "controllers start", "begin", "kube-controller-manager, kube-scheduler")
		cp, err := testenv.StartControlPlane(gctx, d.api, testenv.WithControlPlaneDir(filepath.Join(d.dir, "controllers")),
			testenv.WithControlPlaneBuildLog(logf))
		if err != nil {
			return fmt.Errorf("kube-controller-manager and kube-scheduler: %w", err)
		}
		d.cp = cp
		d.tl.Record("node1", "controllers start", "ok", "")
		return nil
	})
	for _, n := range d.nodes {
		g.Go(func() error {
			if n != first {
				if err := d.startNodeAPIServer(gctx, n, logf); err != nil {
					return err
				}
			}
			return d.startKubelet(gctx, n, logf)
		})
	}
	return g.Wait()
}

// startNodeAPIServer starts n's kube-apiserver against n's etcd member.
func (d *demo) startNodeAPIServer(ctx context.Context, n *cpNode, logf func(string, ...any)) error {
	d.tl.Record(n.name, "kube-apiserver start", "begin", "kube-apiserver, --etcd-servers="+n.member.ClientURL)
	opts := []testenv.APIServerOption{testenv.WithEtcd(d.etcd), testenv.WithEtcdServers(n.member.ClientURL),
		testenv.WithAPIServerDir(filepath.Join(d.dir, "apiserver-"+n.name)), testenv.WithBuildLog(logf)}
	if d.api != nil {
		opts = append(opts, testenv.WithCredentialsOf(d.api))
	}
	api, err := testenv.StartAPIServer(ctx, opts...)
	if err != nil {
		d.tl.Record(n.name, "kube-apiserver start", "failed", err.Error())
		return fmt.Errorf("%s's kube-apiserver: %w", n.name, err)
	}
	n.api = api
	d.tl.Record(n.name, "kube-apiserver start", "ok", api.URL()+" "+api.KubernetesVersion())
	return nil
}

// startKubelet starts n's hollow kubelet against n's own apiserver and
// writes the static-pod manifests of n's etcd and kube-apiserver into its
// manifest directory; the kubelet creates their mirror pods, Ready when the
// processes answer their probes (etcd's /health, the apiserver's /readyz).
func (d *demo) startKubelet(ctx context.Context, n *cpNode, logf func(string, ...any)) error {
	d.tl.Record(n.name, "kubelet start", "begin", "hollow kubelet, static pods etcd and kube-apiserver")
	k, err := testenv.StartNode(ctx, n.api, n.name, testenv.WithNodeDir(filepath.Join(d.dir, "kubelets")), testenv.WithNodeBuildLog(logf))
	if err != nil {
		d.tl.Record(n.name, "kubelet start", "failed", err.Error())
		return fmt.Errorf("%s's kubelet: %w", n.name, err)
	}
	n.kubelet = k
	n.generation = 1
	if err := k.WriteStaticPod(etcdManifest(n.member)); err != nil {
		return err
	}
	if err := k.WriteStaticPod(apiServerManifest(n.api, n.generation)); err != nil {
		return err
	}
	d.tl.Record(n.name, "kubelet start", "ok", "Node Ready; manifests "+strings.Join([]string{etcdPodName, apiServerPodName}, ", "))
	return nil
}

// closeNodes stops every node's agent, registration, kubelet and
// apiserver, then the controllers.
func (d *demo) closeNodes() {
	for _, n := range d.nodes {
		if n.agent != nil {
			n.agent.close()
		}
		if n.reg != nil && !n.lost {
			_ = n.reg.Close()
		}
		n.stop()
		if n.kubelet != nil {
			_ = n.kubelet.Close()
		}
	}
	if d.cp != nil {
		_ = d.cp.Close()
	}
	for _, n := range d.nodes {
		if n.api != nil {
			_ = n.api.Close()
		}
		_ = n.etcd.Close()
	}
}
