// Command kubeadm-etcd-join is a recipe: the etcd part of "kubeadm join
// --control-plane", done with etcdmember.Join and a readiness wait.
//
// It replaces kubeadm's CreateStackedEtcdStaticPodManifestFile
// (cmd/kubeadm/app/phases/etcd/local.go) and the client calls it makes
// (cmd/kubeadm/app/util/etcd/etcd.go): AddMemberAsLearner, then writing the
// etcd static pod, then MemberPromote — which re-sends MemberPromote every
// 500 ms for up to two minutes, taking any error as "not yet" — then
// WaitForClusterAvailable, which asks every endpoint for its Status a fixed
// number of times with a sleep in between.
//
// On the same injected fault — the MemberPromote is applied by etcd but its
// reply is lost (kubeadm #3152, #3317) — kubeadm's next MemberPromote gets
// "etcdserver: can only promote a learner member" until its two minutes run
// out and the join fails with a voter already in the cluster; this recipe
// reads the member list after the error, sees a voter, and succeeds.
//
// etcd runs embedded in this process here (as k3s runs it); kubeadm would
// write its static pod manifest in start instead.
//
//	go run ./examples/recipes/kubeadm-etcd-join --endpoints http://10.0.0.1:2379 \
//	    --name node2 --peer-url http://10.0.0.2:2380 --client-url http://10.0.0.2:2379 --data-dir /var/lib/etcd
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/kubeboot/kubeboot/etcdmember"
	"github.com/kubeboot/kubeboot/readiness"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kubeadm-etcd-join:", err)
		os.Exit(1)
	}
}

// joinEtcd is the recipe: everything kubeadm does between "add a learner"
// and "the cluster is available", as one state-checked flow.
func joinEtcd(ctx context.Context, cli *clientv3.Client, name, peerURL string, start etcdmember.StartFunc, out io.Writer) error {
	members, err := etcdmember.New(cli, etcdmember.WithRPCTimeout(2*time.Second))
	if err != nil {
		return err
	}
	// AddMemberAsLearner → start → MemberPromote loop, deciding every step
	// from the member list; Cleanup removes our learner if the join fails.
	res, err := members.Join(ctx, name, []string{peerURL}, etcdmember.JoinOptions{Cleanup: true}, start)
	if err != nil {
		return fmt.Errorf("join etcd member %s: %w", name, err)
	}
	fmt.Fprintf(out, "member %s (%x) is a voter: %d MemberPromote RPC(s), confirmed from the member list: %v\n",
		name, res.Member.ID, res.Promote.Attempts, res.Promote.ConfirmedByList)

	// WaitForClusterAvailable: a leader, a quorum read, no alarm, and a
	// quorum of voters answering — three times over two seconds.
	healthy := readiness.EtcdHealthy(cli, readiness.WithMemberQuorum())
	if err := readiness.Wait(ctx, healthy, readiness.WithStability(3, 2*time.Second)); err != nil {
		return err
	}
	fmt.Fprintln(out, "etcd cluster is available")
	return nil
}

// run joins the member, then serves it until ctx ends.
func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("kubeadm-etcd-join", flag.ContinueOnError)
	endpoints := fs.String("endpoints", "", "comma-separated client URLs of the existing cluster")
	name := fs.String("name", "", "this member's name")
	peerURL := fs.String("peer-url", "", "this member's peer URL")
	clientURL := fs.String("client-url", "", "this member's client URL")
	dataDir := fs.String("data-dir", "", "this member's data directory")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long the join may take")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *endpoints == "" || *name == "" || *peerURL == "" || *clientURL == "" || *dataDir == "" {
		return errors.New("--endpoints, --name, --peer-url, --client-url and --data-dir are required")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*endpoints, ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()

	var etcd *embed.Etcd
	defer func() {
		if etcd != nil {
			etcd.Close()
		}
	}()
	start := func(ctx context.Context, initialCluster string) error {
		if etcd != nil { // a retry with a newer initial-cluster string
			etcd.Close()
			etcd = nil
		}
		e, err := startEtcd(*name, *peerURL, *clientURL, *dataDir, initialCluster)
		if err != nil {
			return err
		}
		etcd = e
		return nil
	}
	joinCtx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := joinEtcd(joinCtx, cli, *name, *peerURL, start, out); err != nil {
		return err
	}
	select { // Join always calls start, so etcd is set

	case <-ctx.Done():
		return nil
	case err := <-etcd.Err():
		return fmt.Errorf("etcd %s: %w", *name, err)
	}
}

// startEtcd starts an embedded etcd member joining an existing cluster.
func startEtcd(name, peerURL, clientURL, dataDir, initialCluster string) (*embed.Etcd, error) {
	pu, err := url.Parse(peerURL)
	if err != nil {
		return nil, fmt.Errorf("--peer-url: %w", err)
	}
	cu, err := url.Parse(clientURL)
	if err != nil {
		return nil, fmt.Errorf("--client-url: %w", err)
	}
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir = name, filepath.Join(dataDir, "member")
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.InitialCluster, cfg.ClusterState = initialCluster, embed.ClusterStateFlagExisting
	cfg.LogOutputs = []string{filepath.Join(dataDir, "etcd.log")}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	return embed.StartEtcd(cfg)
}
