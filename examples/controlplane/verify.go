package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"

	"github.com/kubeboot/kubeboot/hooks"
)

// verify checks the end state: every member a voter (but the dead learner,
// which must be gone), the agent holding the apiserver's address, every
// hook succeeded.
func (d *demo) verify(ctx context.Context, a *agent) error {
	list, err := d.client.MemberList(ctx)
	if err != nil {
		return fmt.Errorf("member list: %w", err)
	}
	for _, m := range list.Members {
		if m.IsLearner {
			d.res.Learners++
		} else {
			d.res.Voters++
		}
	}
	if err := a.awaitAddresses(ctx, 1); err != nil {
		return err
	}
	d.res.Addresses = a.watcher.Current().Addresses
	if a.sawEmpty() {
		return errors.New("the node agent was handed an empty address set")
	}
	want := d.cfg.Members
	if d.cfg.Fault == FaultDeadLearner {
		want-- // the dead learner was not promoted, and the join removed it
	}
	if d.res.Voters != want || d.res.Learners != 0 {
		return fmt.Errorf("want %d voting etcd members and no learners, have %d voters and %d learners", want, d.res.Voters, d.res.Learners)
	}
	u, err := url.Parse(d.api.URL())
	if err != nil {
		return err
	}
	if !slices.Contains(d.res.Addresses, u.Host) {
		return fmt.Errorf("node agent holds %v, want it to include %s", d.res.Addresses, u.Host)
	}
	for _, h := range d.res.Hooks.Hooks {
		if h.State != hooks.Succeeded {
			return fmt.Errorf("hook %s ended %s", h.Name, h.State)
		}
	}
	d.tl.Record("node1", "verify", "ok", fmt.Sprintf("%d voters, agent has %v, %d hooks succeeded", d.res.Voters, d.res.Addresses, len(d.res.Hooks.Hooks)))
	return nil
}
