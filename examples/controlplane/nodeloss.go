package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeboot/kubeboot/apiserverdisco"
)

// NodeLoss is the node-loss fault's evidence, read from outside the
// watchers: when each remaining agent was last handed a set with the lost
// node's address, and the remaining nodes' health afterwards.
type NodeLoss struct {
	Node    string
	Address string
	// Removed is, per remaining node, how long after the kill its agent
	// was handed a set without the lost address.
	Removed map[string]time.Duration
	// Bound is the lease TTL, plus the half second between etcd's checks
	// for expired leases, plus the watchers' debounce, plus one second of
	// slack for a loaded machine.
	Bound time.Duration
	// WriteErr is a write through the remaining members after the loss.
	WriteErr error
	// NotReady lists remaining apiservers or Nodes that were not ready.
	NotReady []string
}

// loseNode kills a whole control-plane node after the bootstrap: its
// kubelet, kube-apiserver and etcd member at once, and its address
// registration stops (its lease is no longer renewed, as when the node
// loses power). The victim is the last node that does not lead etcd: a
// new etcd leader renews every lease in full when it takes over, which
// would push the expiry past the TTL. Every remaining agent must be
// handed a set without its address within the TTL (plus etcd's expiry
// check, the debounce and a second of slack), never an empty one; etcd
// must keep quorum and the remaining apiservers and Nodes stay ready.
func (d *demo) loseNode(ctx context.Context) error {
	live := d.live()
	var victim *cpNode
	for i := len(live) - 1; i > 0; i-- {
		if !live[i].member.IsLeader() {
			victim = live[i]
			break
		}
	}
	if victim == nil {
		return errors.New("no node to lose: every node but node1 leads etcd")
	}
	u, err := url.Parse(victim.api.URL())
	if err != nil {
		return err
	}
	ev := &NodeLoss{Node: victim.name, Address: u.Host, Removed: map[string]time.Duration{}, Bound: addressTTL + leaseExpiryCheck + apiserverdisco.DefaultDebounce + time.Second}
	d.res.NodeLoss = ev
	// Everything at once, as a power loss: the registration's keepalive
	// and the agent stop with the processes.
	d.tl.Record(victim.name, "fault", "injected", fmt.Sprintf("node lost: kubelet, kube-apiserver %s and etcd member %s killed; its address lease (TTL %s) no longer renewed",
		ev.Address, victim.member.ClientURL, addressTTL))
	d.tl.Record(victim.name, "node loss", "begin", "")
	killed, _, err := d.killNode(victim)
	if err != nil {
		return err
	}
	d.tl.Record(victim.name, "node loss", "ok", fmt.Sprintf("every process gone after %s", time.Since(killed).Round(time.Millisecond)))

	remaining := d.live()
	for _, n := range remaining {
		wctx, cancel := context.WithTimeout(ctx, ev.Bound+30*time.Second)
		at, err := n.agent.awaitDeliveryWithout(wctx, ev.Address, killed)
		cancel()
		if err != nil {
			return fmt.Errorf("%s's agent: %w", n.name, err)
		}
		ev.Removed[n.name] = at.Sub(killed)
	}

	// The rest of the cluster: a write through the remaining members, and
	// every remaining apiserver and Node ready.
	var eps []string
	for _, n := range remaining {
		eps = append(eps, n.member.ClientURL)
	}
	cli, err := d.etcd.NewClient(eps...)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, ev.WriteErr = cli.Put(wctx, "/kubeboot/demo/after-node-loss", victim.name)
	cancel()
	_ = cli.Close()
	for _, n := range remaining {
		kube, err := n.api.Clientset()
		if err != nil {
			return err
		}
		var code int
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		kube.Discovery().RESTClient().Get().AbsPath("/readyz").Do(rctx).StatusCode(&code)
		node, nerr := kube.CoreV1().Nodes().Get(rctx, n.name, metav1.GetOptions{})
		cancel()
		if code != 200 {
			ev.NotReady = append(ev.NotReady, fmt.Sprintf("%s's kube-apiserver /readyz %d", n.name, code))
		}
		if nerr != nil || !nodeReady(node) {
			ev.NotReady = append(ev.NotReady, fmt.Sprintf("Node %s (%v)", n.name, nerr))
		}
	}

	var errs []error
	for name, took := range ev.Removed {
		if took > ev.Bound {
			errs = append(errs, fmt.Errorf("%s's agent dropped %s %s after the kill, more than the TTL plus expiry check, debounce and slack (%s)", name, ev.Address, took.Round(time.Millisecond), ev.Bound))
		}
	}
	for _, n := range remaining {
		if n.agent.sawEmpty() {
			errs = append(errs, fmt.Errorf("%s's agent was handed an empty address set", n.name))
		}
	}
	if ev.WriteErr != nil {
		errs = append(errs, fmt.Errorf("write through the remaining members: %w", ev.WriteErr))
	}
	for _, s := range ev.NotReady {
		errs = append(errs, errors.New(s+": not ready after the loss"))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	d.tl.Record(victim.name, "fault", "observed", fmt.Sprintf("%s left every remaining agent's set after %v (bound %s), none empty; a write through the remaining members succeeded; %d apiservers and Nodes ready",
		ev.Address, roundAll(ev.Removed), ev.Bound, len(remaining)))
	d.res.FaultObserved = true
	return nil
}

// leaseExpiryCheck is how often etcd's leader looks for expired leases.
const leaseExpiryCheck = 500 * time.Millisecond

// awaitDeliveryWithout waits until the agent has been handed, after
// since, a set without addr, and returns when.
func (a *agent) awaitDeliveryWithout(ctx context.Context, addr string, since time.Time) (time.Time, error) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if at, ok := a.firstWithout(addr, since); ok {
			return at, nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("not handed a set without %s (holds %v): %w", addr, a.watcher.Current().Addresses, ctx.Err())
		case <-tick.C:
		}
	}
}

// firstWithout returns when the agent was first handed a set without addr
// after since.
func (a *agent) firstWithout(addr string, since time.Time) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, dl := range a.deliveries {
		if dl.at.After(since) && !slices.Contains(dl.addrs, addr) {
			return dl.at, true
		}
	}
	return time.Time{}, false
}

func nodeReady(n *corev1.Node) bool {
	if n == nil {
		return false
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func roundAll(m map[string]time.Duration) map[string]time.Duration {
	out := make(map[string]time.Duration, len(m))
	for k, v := range m {
		out[k] = v.Round(time.Millisecond)
	}
	return out
}
