package main

import (
	"context"
	"fmt"
	"net/url"
	"slices"

	"github.com/kubeboot/kubeboot/hooks"
)

// verify checks the end state: every member a voter (but the dead learner,
// which must be gone, and the lost node's, which stays a voter that does
// not answer), every remaining node's agent holding exactly the remaining
// apiservers' addresses and never handed an empty set, every hook
// succeeded.
func (d *demo) verify(ctx context.Context) error {
	list, err := d.nodes[0].etcd.MemberList(ctx)
	if err != nil {
		return fmt.Errorf("member list: %w", err)
	}
	d.res.Voters, d.res.Learners = 0, 0
	for _, m := range list.Members {
		if m.IsLearner {
			d.res.Learners++
		} else {
			d.res.Voters++
		}
	}
	want := d.cfg.Members
	if d.cfg.Fault == FaultDeadLearner {
		want-- // the dead learner was not promoted, and the join removed it
	}
	if d.res.Voters != want || d.res.Learners != 0 {
		return fmt.Errorf("want %d voting etcd members and no learners, have %d voters and %d learners", want, d.res.Voters, d.res.Learners)
	}
	var addrs []string
	for _, n := range d.live() {
		u, err := url.Parse(n.api.URL())
		if err != nil {
			return err
		}
		addrs = append(addrs, u.Host)
	}
	slices.Sort(addrs)
	for _, n := range d.live() {
		if err := n.agent.awaitAddresses(ctx, len(addrs)); err != nil {
			return fmt.Errorf("%s: %w", n.name, err)
		}
		got := n.agent.watcher.Current().Addresses
		if !slices.Equal(got, addrs) {
			return fmt.Errorf("%s's agent holds %v, want the live apiservers %v", n.name, got, addrs)
		}
		if n.agent.sawEmpty() {
			return fmt.Errorf("%s's agent was handed an empty address set", n.name)
		}
	}
	d.res.Addresses = addrs
	for _, h := range d.res.Hooks.Hooks {
		if h.State != hooks.Succeeded {
			return fmt.Errorf("hook %s ended %s", h.Name, h.State)
		}
	}
	d.tl.Record("node1", "verify", "ok", fmt.Sprintf("%d voters, every agent has %v, %d hooks succeeded", d.res.Voters, d.res.Addresses, len(d.res.Hooks.Hooks)))
	return nil
}
