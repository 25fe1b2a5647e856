// Command join adds this node's etcd member to an existing cluster the safe
// way, with etcdmember.Join: add as a learner (or find the learner a crashed
// earlier run added), start etcd with the initial-cluster string Join
// computes, wait until it has started and caught up, then promote it —
// deciding every step from the member list, never from an RPC error. It runs
// etcd embedded in the process, as k3s does, and serves until Ctrl-C.
//
//	go run ./examples/join --endpoints http://10.0.0.1:2379 --name node2 \
//	    --peer-url http://10.0.0.2:2380 --client-url http://10.0.0.2:2379 --data-dir /var/lib/etcd
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
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "join:", err)
		os.Exit(1)
	}
}

// run joins the member and serves until ctx ends.
func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("join", flag.ContinueOnError)
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
	client, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*endpoints, ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer client.Close()
	mgr, err := etcdmember.New(client)
	if err != nil {
		return err
	}

	var etcd *embed.Etcd
	defer func() {
		if etcd != nil {
			etcd.Close()
		}
	}()
	start := func(ctx context.Context, initialCluster string) error {
		fmt.Fprintf(out, "starting etcd %s with initial-cluster %s\n", *name, initialCluster)
		e, err := startEtcd(*name, *peerURL, *clientURL, *dataDir, initialCluster)
		etcd = e
		return err
	}
	joinCtx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	res, err := mgr.Join(joinCtx, *name, []string{*peerURL}, etcdmember.JoinOptions{Cleanup: true}, start)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "member %s (%x) is a voter (added now: %v, promote attempts: %d, already voter: %v)\n",
		*name, res.Member.ID, res.Added, res.Promote.Attempts, res.Promote.AlreadyVoter)
	select {
	case <-ctx.Done():
	case err := <-etcd.Err():
		return fmt.Errorf("etcd %s: %w", *name, err)
	}
	return nil
}

// startEtcd starts an embedded etcd joining an existing cluster.
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
