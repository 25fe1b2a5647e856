package etcdmember

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-logr/logr"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Manager changes etcd cluster membership through one client, deciding
// every step from the member list rather than from RPC errors. Its methods
// are safe for concurrent use; it runs nothing in the background, and
// every method returns only when the RPCs and goroutines it started have
// ended. It does not close the client.
type Manager struct {
	cl  *clientv3.Client
	opt options

	// stalls tracks, across PromoteReady passes, when each learner's
	// applied index last advanced.
	mu     sync.Mutex
	stalls map[uint64]*stallClock
}

// New returns a Manager that uses cl for every RPC. cl's endpoints should
// be voting members (a learner serves no member list). The Manager reads
// members' status on their advertised client URLs with cl's TLS settings
// (Maintenance.Status dials each URL). A nil cl or a bad option is an
// error wrapping ErrInvalidArgument. New sends no RPC.
func New(cl *clientv3.Client, opts ...Option) (*Manager, error) {
	if cl == nil {
		return nil, invalid("nil etcd client")
	}
	o := defaultOptions()
	for i, opt := range opts {
		if opt == nil {
			return nil, invalid("option %d is nil", i)
		}
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	return &Manager{cl: cl, opt: o, stalls: map[uint64]*stallClock{}}, nil
}

// log returns the configured logger, or the context's.
func (m *Manager) log(ctx context.Context) logr.Logger {
	if m.opt.logger != nil {
		return *m.opt.logger
	}
	return logr.FromContextOrDiscard(ctx)
}

// rpcCtx bounds one RPC.
func (m *Manager) rpcCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, m.opt.rpcTimeout)
}

// newBackoff returns this call's retry policy.
func (m *Manager) newBackoff() (backoff.BackOff, error) {
	b := m.opt.backoff()
	if b == nil {
		return nil, invalid("the WithBackoff factory returned nil")
	}
	b.Reset()
	return b, nil
}

// list reads the member list (linearizable: served through the leader).
func (m *Manager) list(ctx context.Context) ([]Member, error) {
	rctx, cancel := m.rpcCtx(ctx)
	defer cancel()
	resp, err := m.cl.MemberList(rctx)
	if err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	if resp == nil {
		return nil, errors.New("list members: empty response")
	}
	return fromPB(resp.Members), nil
}

// listOrWait reads the member list. On a transient error it logs it and
// waits for b's next interval, returning ok=false so that the caller's
// loop starts over; a permanent error, a closed client or the end of ctx
// is returned, naming what and the pending state.
func (m *Manager) listOrWait(ctx context.Context, b backoff.BackOff, log *stateLog, what string, pending *string) (members []Member, ok bool, err error) {
	members, err = m.list(ctx)
	if err == nil {
		return members, true, nil
	}
	if k := classify(ctx, err); k == kindPermanent || k == kindCanceled {
		return nil, false, m.stop(ctx, k, what, *pending, err)
	}
	*pending = fmt.Sprintf("reading the member list (last error: %v)", err)
	log.info("list-error", "cannot read the member list; retrying", "err", err)
	return nil, false, m.wait(ctx, b, what, *pending)
}

// stop turns a permanent or canceled error into the call's error.
func (m *Manager) stop(ctx context.Context, k kind, what, pending string, err error) error {
	if k == kindCanceled {
		return canceled(ctx, what, pending)
	}
	return fmt.Errorf("etcdmember: %s: %w", what, err)
}

// wait sleeps for b's next interval. It returns an error naming what (the
// operation) and pending (what was still outstanding) when ctx ends, when
// the client is closed, or when b gives up.
func (m *Manager) wait(ctx context.Context, b backoff.BackOff, what, pending string) error {
	d := b.NextBackOff()
	if d == backoff.Stop {
		return fmt.Errorf("etcdmember: %s: the backoff policy gave up; still %s", what, pending)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return canceled(ctx, what, pending)
	case <-m.cl.Ctx().Done():
		return fmt.Errorf("etcdmember: %s: etcd client closed; still %s", what, pending)
	}
	return nil
}

// canceled is the error for a call whose context ended: it names the
// operation and what was still pending, and wraps ctx.Err() (and the
// cause, when one was given).
func canceled(ctx context.Context, what, pending string) error {
	err := ctx.Err()
	if cause := context.Cause(ctx); cause != nil && cause != err {
		return fmt.Errorf("etcdmember: %s: still %s: %w (%w)", what, pending, err, cause)
	}
	return fmt.Errorf("etcdmember: %s: still %s: %w", what, pending, err)
}

// stateLog logs a message only when the state it describes changes, so a
// wait that repeats the same state logs it once.
type stateLog struct {
	log  logr.Logger
	last string
}

func (s *stateLog) info(state, msg string, kv ...any) {
	if state == s.last {
		s.log.V(1).Info(msg, kv...)
		return
	}
	s.last = state
	s.log.Info(msg, kv...)
}
