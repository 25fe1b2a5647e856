package etcdmember

import (
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-logr/logr"
)

// Option configures a Manager; see New. An option given a bad value makes
// New return an error wrapping ErrInvalidArgument.
type Option func(*options) error

type options struct {
	backoff      func() backoff.BackOff
	rpcTimeout   time.Duration
	logger       *logr.Logger
	stallTimeout time.Duration
	progress     func(Progress)
	replaceStale bool
	maxPerPass   int
	evictAfter   time.Duration
}

// Defaults.
const (
	// DefaultRPCTimeout bounds each RPC when WithRPCTimeout is not given.
	DefaultRPCTimeout = 5 * time.Second
	// DefaultStallTimeout is how long a learner may make no progress
	// before it counts as stalled when WithStallTimeout is not given. It is
	// generous because a learner receiving a large snapshot shows no
	// progress until the snapshot is applied.
	DefaultStallTimeout = 5 * time.Minute
)

func defaultOptions() options {
	return options{
		backoff:      defaultBackoff,
		rpcTimeout:   DefaultRPCTimeout,
		stallTimeout: DefaultStallTimeout,
		maxPerPass:   1,
	}
}

// defaultBackoff waits 200 ms, growing by 1.6 up to 5 s, with ±20 %
// jitter, for as long as the caller's context allows.
func defaultBackoff() backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 200 * time.Millisecond
	b.Multiplier = 1.6
	b.RandomizationFactor = 0.2
	b.MaxInterval = 5 * time.Second
	b.MaxElapsedTime = 0
	b.Reset()
	return b
}

// WithBackoff sets the retry policy. newBackOff is called at the start of
// each blocking step to get that step's own policy, so it must return a
// fresh value each time: once per Promote, WaitStarted and Remove call,
// once per AddLearner call plus once for each stale member it replaces
// (WithReplaceStaleMember, through Remove), and once per step of Join —
// three times on success (add, as for AddLearner; wait for start;
// promote) and once more when Join removes the learner it added
// (JoinOptions.Cleanup). While a learner's raft applied index advances,
// Promote resets the policy, so that the wait grows only while nothing
// moves. A policy that returns backoff.Stop ends the call with an error
// naming what was still pending; a delay shorter than MinRetryInterval
// (zero or negative included) is waited as MinRetryInterval. A nil
// newBackOff is an error from New; a factory that returns nil (or a nil
// pointer) makes the call return an error wrapping ErrInvalidArgument; a
// panic in the factory or in the policy's NextBackOff or Reset is
// recovered and ends the call with a *CallbackError
// (ErrCallbackPanicked).
func WithBackoff(newBackOff func() backoff.BackOff) Option {
	return func(o *options) error {
		if newBackOff == nil {
			return invalid("WithBackoff(nil)")
		}
		o.backoff = newBackOff
		return nil
	}
}

// WithRPCTimeout bounds every single RPC (default DefaultRPCTimeout;
// status probes of single members use at most one second), and how long
// the replication check before a promotion waits for the learner to apply
// the check's raft entry (see Progress.CaughtUp). An RPC that
// times out is not taken as a failure of the change it carried: the member
// list is read again and decides. A membership change whose reply is slow
// is also checked against the member list while it waits (see AddLearner,
// Promote and Remove), so a change that etcd dropped without answering
// does not wait out this timeout. d must be positive.
func WithRPCTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return invalid("WithRPCTimeout(%s): the timeout must be positive", d)
		}
		o.rpcTimeout = d
		return nil
	}
}

// WithLogger sets the logger. Without it, each call logs to
// logr.FromContextOrDiscard(ctx). State changes (a learner started,
// caught up, the learner limit reached) are logged at level 0, once per
// distinct state; every attempt at V(1). A zero logr.Logger logs nothing.
// A logger that panics does not change what a call does: the panic is
// recovered, the logger is not called again during that call, and the
// call's error then includes a *CallbackError (ErrCallbackPanicked)
// joined with its own (nil on success — the call's result still says
// what happened).
func WithLogger(l logr.Logger) Option {
	return func(o *options) error {
		o.logger = &l
		return nil
	}
}

// WithStallTimeout sets how long a learner may make no progress — its raft
// applied index does not advance, or it does not start — before Promote,
// WaitStarted and Join give up with ErrLearnerStalled, and PromoteReady
// reports it as stalled (default DefaultStallTimeout). A learner whose
// client URL cannot be reached, or that answers but is not receiving raft
// entries, counts as making no progress. A reading that shows the learner
// caught up (Progress.CaughtUp) is never a stall. d must be positive.
func WithStallTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return invalid("WithStallTimeout(%s): the timeout must be positive", d)
		}
		o.stallTimeout = d
		return nil
	}
}

// WithProgress has the Manager call f with every reading of a learner's
// progress, from the goroutine of the call that read it (Promote,
// WaitStarted, Join or PromoteReady), so f is called concurrently only if
// those calls are. f must not block for long. A nil f is an error. A
// panic in f is treated as a logger's is (see WithLogger): recovered, f
// is not called again during that call, and the call's error includes a
// *CallbackError.
func WithProgress(f func(Progress)) Option {
	return func(o *options) error {
		if f == nil {
			return invalid("WithProgress(nil)")
		}
		o.progress = f
		return nil
	}
}

// WithReplaceStaleMember makes AddLearner (and Join) remove a member that
// has the requested name but other peer URLs — a node that came back with
// a new address — before adding the new learner, as Talos does. The
// removal goes through Remove without Force, so a voter is not removed if
// that would lose quorum. Without this option such a member is a
// *ConflictError.
func WithReplaceStaleMember() Option {
	return func(o *options) error {
		o.replaceStale = true
		return nil
	}
}

// WithMaxPromotionsPerPass sets how many learners one PromoteReady pass
// may promote (default 1: each promotion changes the quorum, so the next
// pass decides again on the new member list). n must be at least 1.
func WithMaxPromotionsPerPass(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return invalid("WithMaxPromotionsPerPass(%d): must be at least 1", n)
		}
		o.maxPerPass = n
		return nil
	}
}

// WithEvictStalledAfter makes PromoteReady remove learners that have made
// no progress for d (it should be longer than the stall timeout): learners
// that never started, and started ones whose applied index did not move
// while it stayed behind the leader's (both indices read) — not ones whose
// client URL cannot be reached from here, nor ones whose leader's index
// could not be read (an idle cluster gives a learner nothing to apply).
// A learner cut off from the leader while its client URL answers falls
// behind once a replication check (see PromoteReady) has added entries,
// and then counts as behind. Without it, PromoteReady only reports
// stalled learners. d must be positive.
func WithEvictStalledAfter(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return invalid("WithEvictStalledAfter(%s): the duration must be positive", d)
		}
		o.evictAfter = d
		return nil
	}
}
