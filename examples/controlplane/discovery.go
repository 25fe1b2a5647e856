package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubeboot/kubeboot/apiserverdisco"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// agent is the node agent's view of the apiservers: a watcher, and the
// record of every set it was handed.
type agent struct {
	node    string
	watcher *apiserverdisco.Watcher
	proxy   *testenv.Proxy   // empty-addresses only
	client  *clientv3.Client // through proxy; nil without one
	stop    context.CancelFunc
	wg      sync.WaitGroup

	mu         sync.Mutex
	deliveries []delivery
}

// delivery is one set a watcher handed its agent.
type delivery struct {
	at    time.Time
	addrs []string
}

func (a *agent) close() {
	a.stop()
	_ = a.watcher.Close()
	a.wg.Wait()
	if a.client != nil {
		_ = a.client.Close()
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
	for _, dl := range a.deliveries {
		if len(dl.addrs) == 0 {
			return true
		}
	}
	return false
}

// addressTTL is the lease TTL under which every node publishes its
// apiserver's address: a node that dies leaves the watchers' sets within
// it (plus etcd's expiry check and the watchers' debounce).
const addressTTL = 10 * time.Second

// discover publishes every node's apiserver address, each through the
// node's own etcd member under a lease of addressTTL, and starts every
// node's agent: a watcher through the node's own member, which waits until
// it holds every address. With the empty-addresses fault, node 1's agent
// watches through a proxy, and its etcd connection is blackholed for longer
// than a backoff cycle once it has the addresses: it must keep them and
// never be handed an empty set.
func (d *demo) discover(ctx context.Context) error {
	live := d.live()
	for _, n := range live {
		u, err := url.Parse(n.api.URL())
		if err != nil {
			return err
		}
		reg, err := apiserverdisco.Publish(n.ctx, n.etcd, n.name, u.Host, apiserverdisco.WithTTL(addressTTL))
		if err != nil {
			return fmt.Errorf("%s: publish: %w", n.name, err)
		}
		n.reg = reg
		d.tl.Record(n.name, "address publish", "ok", fmt.Sprintf("%s under lease %x", u.Host, int64(reg.Lease())))
	}
	for _, n := range live {
		client := n.etcd
		var proxy *testenv.Proxy
		if (d.cfg.Fault == FaultEmptyAddresses || d.cfg.Chaos > 0) && n == d.nodes[0] {
			var err error
			if proxy, err = testenv.NewProxy(n.member.Endpoint()); err != nil {
				return err
			}
			if client, err = d.etcd.NewClient("http://" + proxy.Addr()); err != nil {
				_ = proxy.Close()
				return err
			}
		}
		a, err := d.startAgent(n, client, proxy)
		if err != nil {
			return fmt.Errorf("%s: agent: %w", n.name, err)
		}
		n.agent = a
	}
	for _, n := range live {
		d.tl.Record(n.name, "agent: wait for addresses", "begin", fmt.Sprintf("%d", len(live)))
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		addrs, err := n.agent.watcher.WaitForAddresses(wctx, len(live))
		cancel()
		if err != nil {
			return fmt.Errorf("%s: agent: %w", n.name, err)
		}
		d.tl.Record(n.name, "agent: wait for addresses", "ok", fmt.Sprint(addrs))
	}
	if d.cfg.Fault == FaultEmptyAddresses {
		return d.etcdOutage(ctx, d.nodes[0].agent)
	}
	return nil
}

// startAgent starts n's node agent: a watcher of the addresses through
// client, and a loop that records every set it is handed.
func (d *demo) startAgent(n *cpNode, client *clientv3.Client, proxy *testenv.Proxy) (*agent, error) {
	wctx, stop := context.WithCancel(n.ctx)
	w, err := apiserverdisco.NewWatcher(wctx, apiserverdisco.EtcdPrefix(client, apiserverdisco.DefaultPrefix))
	if err != nil {
		stop()
		if proxy != nil {
			_ = client.Close()
			_ = proxy.Close()
		}
		return nil, err
	}
	a := &agent{node: n.name, watcher: w, proxy: proxy, stop: stop}
	if proxy != nil {
		a.client = client
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for {
			snap, err := w.Next(wctx)
			if err != nil {
				return
			}
			a.mu.Lock()
			a.deliveries = append(a.deliveries, delivery{at: time.Now(), addrs: snap.Addresses})
			a.mu.Unlock()
			d.tl.Record(n.name, "agent: addresses delivered", "ok", fmt.Sprint(snap.Addresses))
		}
	}()
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
	d.tl.Record("node1", "fault", "injected", fmt.Sprintf("etcd unreachable from node1's agent for %s", outage))
	standby, err := apiserverdisco.Publish(ctx, d.client, "standby", standbyAddr)
	if err != nil {
		return err
	}
	defer standby.Close()
	d.tl.Record("standby", "address publish", "ok", standbyAddr+" (during node1's agent's outage)")
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
	d.tl.Record("node1", "fault", "observed", fmt.Sprintf("kept %v through the outage; after it, received %v", held, resumed))
	if err := standby.Close(); err != nil {
		return err
	}
	if a.sawEmpty() {
		return errors.New("the agent was handed an empty address set during the etcd outage")
	}
	d.res.FaultObserved = true
	return nil
}
