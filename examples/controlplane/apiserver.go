package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"sync"
	"time"

	"github.com/kubeboot/kubeboot/apiserverdisco"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// startAPIServer starts a real kube-apiserver on node 1 against the whole
// etcd cluster and publishes its address under a lease.
func (d *demo) startAPIServer(ctx context.Context) error {
	d.tl.Record("node1", "kube-apiserver start", "begin", "kube-apiserver "+testenv.KubernetesVersion)
	logf := func(format string, args ...any) { fmt.Fprintf(d.cfg.Log, format+"\n", args...) }
	api, err := testenv.StartAPIServer(ctx, testenv.WithEtcd(d.etcd),
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
// reset) and checks the agent still holds the address afterwards.
func (d *demo) etcdOutage(ctx context.Context, a *agent) error {
	const outage = 4 * time.Second
	a.proxy.Blackhole(true)
	a.proxy.ResetAll()
	d.tl.Record("agent", "fault", "injected", fmt.Sprintf("etcd unreachable from the agent for %s", outage))
	select {
	case <-time.After(outage):
	case <-ctx.Done():
		return ctx.Err()
	}
	held := a.watcher.Current().Addresses
	a.proxy.Pass()
	a.proxy.ResetAll()
	d.tl.Record("agent", "fault", "observed", fmt.Sprintf("etcd back; during the outage the agent kept %v", held))
	if len(held) == 0 || a.sawEmpty() {
		return errors.New("the agent was handed an empty address set during the etcd outage")
	}
	d.res.FaultObserved = true
	return nil
}
