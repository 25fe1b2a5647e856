package etcdmember

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// etcd's raft leader drops a membership change proposed while another one
// is still pending (proposed, not yet applied) — in practice a concurrent
// MemberAdd, MemberPromote or MemberRemove from another node — and etcd
// never answers the dropped request: the RPC would wait for its whole
// timeout (WithRPCTimeout, 5 s by default). change notices that from the
// member list instead.
//
// A change's schedule is when change first reads the member list, if the
// reply has not come by then, and how often after that.
type changeSchedule struct{ first, every time.Duration }

var (
	// changeCheck is for promotions and removals: a change is normally
	// applied well within 100 ms, so one answered in time costs no extra
	// RPC.
	changeCheck = changeSchedule{100 * time.Millisecond, 50 * time.Millisecond}
	// addCheck is for MemberAdd, checked sooner: joins that run at the
	// same moment send their adds at the same moment, so all but one are
	// dropped, and an add that lands after the first of those learners
	// has been promoted is refused for five seconds by etcd's strict
	// reconfiguration check ("unhealthy cluster").
	addCheck = changeSchedule{15 * time.Millisecond, 15 * time.Millisecond}
)

// errUnanswered is change's error when it stopped waiting for the reply
// because the member list decided. It is a gRPC Aborted status, so callers
// classify it as transient and re-read the member list.
var errUnanswered = status.Error(codes.Aborted, "no reply to the membership change")

// The two ways the member list decides for change.
var (
	errChangeMade    = fmt.Errorf("%w: the member list shows it made", errUnanswered)
	errChangeDropped = fmt.Errorf("%w: the member list shows another membership change applied meanwhile and not this one, so etcd dropped it (a change proposed while another is pending is dropped)", errUnanswered)
)

// change sends one membership change through c.cluster and returns its
// error. before is the member list the caller decided from; done reports
// whether a member list shows the change made. When the reply has not come
// within sched.first, change reads the member list every sched.every while
// it waits; once a list shows the change made, or shows another
// membership change applied since before while this one is not made
// (etcd dropped it), it cancels the RPC and returns errChangeMade or
// errChangeDropped, both wrapping errUnanswered (or the RPC's own success,
// if that came first). The caller
// then decides from the member list, as after any lost reply. change
// returns only after the RPC has ended.
func (c *call) change(ctx context.Context, sched changeSchedule, before []Member, done func([]Member) bool, rpc func(context.Context, pb.ClusterClient) error) error {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		var err error
		defer func() {
			// The client's interceptors (the caller's code) run here: a
			// panic in them is this RPC's failure, not the process's.
			if r := recover(); r != nil {
				err = fmt.Errorf("etcdmember: recovered panic in the etcd client's interceptors: %v", r)
			}
			errc <- err
		}()
		err = c.cluster(rctx, false, rpc)
	}()
	key := confKey(before)
	t := time.NewTimer(sched.first)
	defer t.Stop()
	for {
		select {
		case err := <-errc:
			return err
		case <-t.C:
		}
		var decided error
		if members, err := c.list(ctx); err == nil {
			switch {
			case done(members):
				decided = errChangeMade
			case confKey(members) != key:
				decided = errChangeDropped
			}
		}
		if decided != nil {
			cancel()
			if err := <-errc; err == nil {
				return nil
			}
			c.log.V(1).Info("stopped waiting for the reply to a membership change", "reason", decided)
			return decided
		}
		t.Reset(sched.every)
	}
}

// confKey is the membership as raft sees it: IDs and voting rights (names
// and client URLs change when a member starts, which is no membership
// change).
func confKey(members []Member) string {
	parts := make([]string, 0, len(members))
	for _, m := range members {
		parts = append(parts, fmt.Sprintf("%x/%t", m.ID, m.IsLearner))
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}
