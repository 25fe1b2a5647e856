package etcdmember

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Two joining members must not start at the same time. A member started
// with --initial-cluster-state=existing asks the members listed in its
// --initial-cluster, on their peer URLs, for the member list (etcd v3.6:
// GetClusterFromRemotePeers, in URL order, 10 s timeout each), and then
// every one of them for its version and downgrade state (about 7 s each).
// A member whose etcd is still starting has its peer port open but answers
// nothing until its own start is done, and that start is asking us the
// same: each waits out the other's timeouts. So Join starts its member
// only when every unstarted member with a lower ID than its own has
// started (they start in ID order), or it gave up on one.

// startWaitLimit is the longest Join waits for one member ahead of it to
// start (shorter when the stall timeout is): about etcd's own 10 s
// timeout for a peer that does not answer, which is what starting at the
// same time as a starting member costs.
const startWaitLimit = 10 * time.Second

// startWaitPoll returns the schedule on which the member list is read
// while waiting for a member ahead to start: 20 ms, growing by 1.5 up to
// 500 ms, ±20 % jitter. A member's start takes tens of milliseconds to a
// few seconds, so the first reads come quickly.
func startWaitPoll() backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 20 * time.Millisecond
	b.Multiplier = 1.5
	b.RandomizationFactor = 0.2
	b.MaxInterval = 500 * time.Millisecond
	b.MaxElapsedTime = 0
	b.Reset()
	return b
}

// aheadOf returns the members that must start before member id: those
// that have not started and have a lower ID, except those in skip, in ID
// order.
func aheadOf(members []Member, id uint64, skip map[uint64]bool) []Member {
	var ahead []Member
	for _, m := range members {
		if m.ID < id && !m.Started() && !skip[m.ID] {
			ahead = append(ahead, m)
		}
	}
	slices.SortFunc(ahead, func(a, b Member) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return ahead
}

// awaitStartTurn waits until no member ahead of member id (aheadOf) is
// left, re-reading the member list on startWaitPoll's schedule, and
// returns the last list read (members, when there was nothing to wait
// for). It waits for the first member ahead at most limit from when that
// member came first, then gives up on it (logged) and goes on with the
// next. A member list that cannot be read is retried on the same
// schedule; a permanent error is returned. When ctx ends it returns an
// error wrapping ctx.Err() that names the member it was waiting for.
func (c *call) awaitStartTurn(ctx context.Context, members []Member, id uint64, what string, limit time.Duration) ([]Member, error) {
	var (
		poll    backoff.BackOff
		gaveUp  = map[uint64]bool{}
		head    uint64
		since   time.Time
		pending string
		log     = c.log.WithValues("id", hex(id))
	)
	for {
		ahead := aheadOf(members, id, gaveUp)
		if len(ahead) == 0 {
			if head != 0 {
				log.Info("no member ahead of this one is starting; starting it")
			}
			return members, nil
		}
		first := ahead[0]
		now := time.Now()
		if first.ID != head {
			head, since = first.ID, now
			pending = fmt.Sprintf("waiting for member %x %v, unstarted and ahead in start order (lower ID), to start first", first.ID, first.PeerURLs)
			log.Info("waiting for a member ahead in start order to start first", "ahead", hex(first.ID), "peerURLs", first.PeerURLs, "limit", limit)
		}
		left := limit - now.Sub(since)
		if left <= 0 {
			gaveUp[first.ID] = true
			log.Info("gave up waiting for a member ahead in start order; it did not start", "ahead", hex(first.ID), "waited", now.Sub(since))
			continue
		}
		if poll == nil {
			poll = startWaitPoll()
		}
		if err := c.sleep(ctx, min(poll.NextBackOff(), left), what, pending); err != nil {
			return nil, err
		}
		fresh, err := c.list(ctx)
		if err == nil {
			members = fresh
			continue
		}
		if k := classify(ctx, err); k == kindPermanent || k == kindCanceled {
			return nil, stop(ctx, k, what, pending, err)
		}
		log.V(1).Info("cannot read the member list while waiting for a member ahead to start; retrying", "err", err)
	}
}
