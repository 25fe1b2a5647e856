package etcdmember_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// laxCluster is a plaintext embedded etcd cluster started with
// --strict-reconfig-check=false, which internal/testenv cannot configure.
// It exists for one case: showing that RemoveOptions.Force really skips
// this package's quorum check, which a default etcd would otherwise back
// up with its own refusal.
type laxCluster struct {
	mu      sync.Mutex
	members []*embed.Etcd
	urls    []string
	ids     []uint64
}

func newLaxCluster(t testing.TB, n int) *laxCluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	dir := t.TempDir()
	type spec struct{ name, peer, client string }
	specs := make([]spec, n)
	var initial []string
	for i := range specs {
		specs[i] = spec{fmt.Sprintf("lax%d", i), "http://" + freeAddr(t), "http://" + freeAddr(t)}
		initial = append(initial, specs[i].name+"="+specs[i].peer)
	}
	lc := &laxCluster{}
	t.Cleanup(lc.close)
	for _, s := range specs {
		cfg := embed.NewConfig()
		cfg.Name, cfg.Dir = s.name, filepath.Join(dir, s.name)
		pu, err := url.Parse(s.peer)
		require.NoError(t, err)
		cu, err := url.Parse(s.client)
		require.NoError(t, err)
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.InitialClusterToken = "lax"
		cfg.ClusterState = embed.ClusterStateFlagNew
		cfg.StrictReconfigCheck = false
		cfg.UnsafeNoFsync = true
		cfg.TickMs, cfg.ElectionMs = 50, 500
		cfg.LogOutputs = []string{filepath.Join(dir, s.name+".log")}
		e, err := embed.StartEtcd(cfg)
		require.NoError(t, err)
		lc.members = append(lc.members, e)
		lc.urls = append(lc.urls, s.client)
	}
	for _, e := range lc.members {
		select {
		case <-e.Server.ReadyNotify():
		case err := <-e.Err():
			t.Fatalf("lax etcd %s: %v", e.Config().Name, err)
		case <-ctx.Done():
			t.Fatalf("lax etcd %s not ready: %v", e.Config().Name, ctx.Err())
		}
		lc.ids = append(lc.ids, uint64(e.Server.MemberID()))
	}
	return lc
}

// client returns a client for the given members' client URLs.
func (lc *laxCluster) client(t testing.TB, idx ...int) *clientv3.Client {
	t.Helper()
	var eps []string
	for _, i := range idx {
		eps = append(eps, lc.urls[i])
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

func (lc *laxCluster) id(i int) uint64 { return lc.ids[i] }

// stop stops member i at once.
func (lc *laxCluster) stop(i int) {
	lc.mu.Lock()
	e := lc.members[i]
	lc.members[i] = nil
	lc.mu.Unlock()
	if e != nil {
		e.Server.HardStop()
		e.Close()
	}
}

func (lc *laxCluster) close() {
	var wg sync.WaitGroup
	for i := range lc.members {
		wg.Go(func() { lc.stop(i) })
	}
	wg.Wait()
}

// freeAddr reserves a loopback port (released before etcd binds it).
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}
