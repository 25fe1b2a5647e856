package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/kubeboot/kubeboot/apiserverdisco"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// startAPIServer starts a real kube-apiserver on node 1 against the whole
// etcd cluster (every member whose etcd runs).
func (d *demo) startAPIServer(ctx context.Context) error {
	d.tl.Record("node1", "kube-apiserver start", "begin", "kube-apiserver "+testenv.KubernetesVersion)
	logf := func(format string, args ...any) { fmt.Fprintf(d.cfg.Log, format+"\n", args...) }
	api, err := testenv.StartAPIServer(ctx, testenv.WithEtcd(d.etcd), testenv.WithEtcdServers(d.liveEndpoints()...),
		testenv.WithAPIServerDir(filepath.Join(d.dir, "apiserver")), testenv.WithBuildLog(logf))
	if err != nil {
		return err
	}
	d.api = api
	d.tl.Record("node1", "kube-apiserver start", "ok", api.URL())
	return nil
}

// agent is the node agent's view of the apiservers: a watcher, and the
// record of every set it was handed.
type agent struct {
	watcher *apiserverdisco.Watcher
	proxy   *testenv.Proxy
	stop    context.CancelFunc
	wg      sync.WaitGroup

	mu         sync.Mutex
	deliveries [][]string
	reg        *apiserverdisco.Registration
}

func (a *agent) close() {
	a.stop()
	_ = a.watcher.Close()
	a.wg.Wait()
	if a.reg != nil {
		_ = a.reg.Close()
	}
	if a.proxy != nil {
		_ = a.proxy.Close()
	}
}

// awaitAddresses waits until the agent holds exactly n addresses (after a
// publisher left, its removal is debounced). It reads Current: Next belongs
// to the agent's own loop, which records every delivery.
func (a *agent) awaitAddresses(ctx context.Context, n int) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		snap := a.watcher.Current()
		if len(snap.Addresses) == n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the node agent to hold %d address(es), it has %v: %w", n, snap.Addresses, ctx.Err())
		case <-tick.C:
		}
	}
}

func (a *agent) sawEmpty() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, set := range a.deliveries {
		if len(set) == 0 {
			return true
		}
	}
	return false
}

// discover publishes node 1's apiserver address and starts the node agent's
// watcher, which waits for it. With the empty-addresses fault, the agent's
// etcd connection is blackholed for longer than a backoff cycle once it has
// the address: it must keep the address and never be handed an empty set.
func (d *demo) discover(ctx context.Context) (*agent, error) {
	u, err := url.Parse(d.api.URL())
	if err != nil {
		return nil, err
	}
	reg, err := apiserverdisco.Publish(ctx, d.client, "node1", u.Host, apiserverdisco.WithTTL(10*time.Second))
	if err != nil {
		return nil, err
	}
	d.tl.Record("node1", "address publish", "ok", fmt.Sprintf("%s under lease %x", u.Host, int64(reg.Lease())))

	agentClient := d.client
	var proxy *testenv.Proxy
	if d.cfg.Fault == FaultEmptyAddresses {
		if proxy, err = testenv.NewProxy(d.etcd.Member(0).Endpoint()); err != nil {
			_ = reg.Close()
			return nil, err
		}
		if agentClient, err = d.etcd.NewClient("http://" + proxy.Addr()); err != nil {
			_ = reg.Close()
			_ = proxy.Close()
			return nil, err
		}
	}
	wctx, stop := context.WithCancel(ctx)
	w, err := apiserverdisco.NewWatcher(wctx, apiserverdisco.EtcdPrefix(agentClient, apiserverdisco.DefaultPrefix))
	if err != nil {
		stop()
		_ = reg.Close()
		if proxy != nil {
			_ = proxy.Close()
		}
		return nil, err
	}
	a := &agent{watcher: w, proxy: proxy, stop: stop, reg: reg}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for {
			snap, err := w.Next(wctx)
			if err != nil {
				return
			}
			a.mu.Lock()
			a.deliveries = append(a.deliveries, snap.Addresses)
			a.mu.Unlock()
			d.tl.Record("agent", "addresses delivered", "ok", fmt.Sprint(snap.Addresses))
		}
	}()
	d.tl.Record("agent", "wait for addresses", "begin", "")
	addrs, err := w.WaitForAddresses(ctx, 1)
	if err != nil {
		a.close()
		return nil, err
	}
	d.tl.Record("agent", "wait for addresses", "ok", fmt.Sprint(addrs))
	if d.cfg.Fault == FaultEmptyAddresses {
		if err := d.etcdOutage(ctx, a); err != nil {
			a.close()
			return nil, err
		}
	}
	return a, nil
}

// etcdOutage cuts the agent off from etcd (blackhole, then every connection
// reset) for longer than a backoff cycle. Meanwhile a second apiserver
// publishes its address, which the agent must not see while cut off (the
// outage is real) and must receive once etcd is back (the watch resumed);
// through it all the agent keeps the first address and is never handed an
// empty set. The second apiserver then leaves again.
func (d *demo) etcdOutage(ctx context.Context, a *agent) error {
	const outage = 4 * time.Second
	const standbyAddr = "192.0.2.12:6443" // documentation range: data only, nothing connects to it
	before := a.watcher.Current().Addresses
	a.proxy.Blackhole(true)
	a.proxy.ResetAll()
	d.tl.Record("agent", "fault", "injected", fmt.Sprintf("etcd unreachable from the agent for %s", outage))
	standby, err := apiserverdisco.Publish(ctx, d.client, "node2", standbyAddr)
	if err != nil {
		return err
	}
	defer standby.Close()
	d.tl.Record("node2", "address publish", "ok", standbyAddr+" (during the agent's outage)")
	select {
	case <-time.After(outage):
	case <-ctx.Done():
		return ctx.Err()
	}
	held := a.watcher.Current().Addresses
	a.proxy.Pass()
	a.proxy.ResetAll()
	if !slices.Equal(held, before) {
		return fmt.Errorf("during the outage the agent's set changed from %v to %v: it was not cut off, or it lost addresses", before, held)
	}
	resumed, err := a.watcher.WaitForAddresses(ctx, len(before)+1)
	if err != nil {
		return fmt.Errorf("the agent did not resume after the outage: %w", err)
	}
	d.tl.Record("agent", "fault", "observed", fmt.Sprintf("kept %v through the outage; after it, received %v", held, resumed))
	if err := standby.Close(); err != nil {
		return err
	}
	if a.sawEmpty() {
		return errors.New("the agent was handed an empty address set during the etcd outage")
	}
	d.res.FaultObserved = true
	return nil
}
