package etcdmember_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-logr/logr"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/kubeboot/kubeboot/etcdmember"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// deadClient is a client whose endpoint has no server, counting the RPCs
// it would send.
func deadClient(t *testing.T) (*clientv3.Client, *rpcCounter) {
	t.Helper()
	counter := newRPCCounter()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"http://127.0.0.1:1"},
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(counter.interceptor())},
		Logger:      zap.NewNop(),
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cli.Close() })
	return cli, counter
}

// calls runs every method of m with otherwise valid input.
func calls(ctx context.Context, m *etcdmember.Manager) map[string]func() error {
	urls := []string{"http://127.0.0.1:2380"}
	start := func(context.Context, string) error { return nil }
	return map[string]func() error{
		"AddLearner":   func() error { _, err := m.AddLearner(ctx, "n", urls); return err },
		"Promote":      func() error { _, err := m.Promote(ctx, 1); return err },
		"WaitStarted":  func() error { _, err := m.WaitStarted(ctx, 1); return err },
		"Remove":       func() error { _, err := m.Remove(ctx, 1, etcdmember.RemoveOptions{}); return err },
		"Join":         func() error { _, err := m.Join(ctx, "n", urls, etcdmember.JoinOptions{}, start); return err },
		"PromoteReady": func() error { _, err := m.PromoteReady(ctx); return err },
	}
}

// TestTypedNilInputs walks every argument that is a pointer, interface or
// func: nil, typed nil, or a zero value that cannot work is an error
// wrapping ErrInvalidArgument at the call, naming the argument — never a
// panic, and no RPC.
func TestTypedNilInputs(t *testing.T) {
	cli, counter := deadClient(t)
	ctx := testCtx(t)
	invalid := func(t *testing.T, err error, names ...string) {
		t.Helper()
		require.ErrorIs(t, err, etcdmember.ErrInvalidArgument)
		for _, n := range names {
			require.Contains(t, err.Error(), n)
		}
	}

	t.Run("New", func(t *testing.T) {
		_, err := etcdmember.New((*clientv3.Client)(nil))
		invalid(t, err, "etcd client")
		_, err = etcdmember.New(&clientv3.Client{})
		invalid(t, err, "clientv3.New")
		_, err = etcdmember.New(cli, nil)
		invalid(t, err, "option 0")
		var opt etcdmember.Option
		_, err = etcdmember.New(cli, etcdmember.WithRPCTimeout(time.Second), opt)
		invalid(t, err, "option 1")
		_, err = etcdmember.New(cli, etcdmember.WithBackoff(nil))
		invalid(t, err, "WithBackoff")
		var f func(etcdmember.Progress)
		_, err = etcdmember.New(cli, etcdmember.WithProgress(f))
		invalid(t, err, "WithProgress")
	})

	t.Run("nil and zero Manager", func(t *testing.T) {
		for _, m := range []*etcdmember.Manager{nil, {}} {
			for name, call := range calls(ctx, m) {
				invalid(t, call(), name, "Manager")
			}
		}
	})

	m := newManager(t, cli)
	t.Run("nil ctx", func(t *testing.T) {
		var nilCtx context.Context
		for name, call := range calls(nilCtx, m) {
			invalid(t, call(), name, "ctx")
		}
	})

	t.Run("Join nil start", func(t *testing.T) {
		var start etcdmember.StartFunc
		_, err := m.Join(ctx, "n", []string{"http://127.0.0.1:2380"}, etcdmember.JoinOptions{}, start)
		invalid(t, err, "start")
	})

	t.Run("backoff factory returns nil", func(t *testing.T) {
		for _, f := range []func() backoff.BackOff{
			func() backoff.BackOff { return nil },
			func() backoff.BackOff { return (*backoff.ExponentialBackOff)(nil) },
		} {
			bm, err := etcdmember.New(cli, etcdmember.WithBackoff(f))
			require.NoError(t, err)
			for call, run := range calls(ctx, bm) {
				if call == "PromoteReady" {
					continue // one pass: it takes no retry policy
				}
				invalid(t, run(), "WithBackoff factory returned nil")
			}
		}
	})

	t.Run("zero logger", func(t *testing.T) {
		lm := newManager(t, cli, etcdmember.WithLogger(logr.Logger{}))
		_, err := lm.Promote(ctx, 0)
		invalid(t, err, "member ID 0")
	})
	require.Zero(t, counter.total(), "no RPC may be sent for bad input: %v", counter.snapshot())
}

// panicky is a backoff policy whose methods panic when asked to.
type panicky struct {
	nextPanics, resetPanics bool
}

func (p *panicky) NextBackOff() time.Duration {
	if p.nextPanics {
		panic("NextBackOff exploded")
	}
	return 20 * time.Millisecond
}

func (p *panicky) Reset() {
	if p.resetPanics {
		panic("Reset exploded")
	}
}

// panicSink is a logr.LogSink that panics on Info.
type panicSink struct{ calls atomic.Int32 }

func (s *panicSink) Init(logr.RuntimeInfo)          {}
func (s *panicSink) Enabled(int) bool               { return true }
func (s *panicSink) Info(int, string, ...any)       { s.calls.Add(1); panic("logger exploded") }
func (s *panicSink) Error(error, string, ...any)    { s.calls.Add(1); panic("logger exploded") }
func (s *panicSink) WithValues(...any) logr.LogSink { return s }
func (s *panicSink) WithName(string) logr.LogSink   { return s }
func (s *panicSink) WithCallDepth(int) logr.LogSink { return s }

var _ logr.CallDepthLogSink = (*panicSink)(nil)

// TestCallbackPanicsContained: every function the caller hands the
// Manager — Join's start function, the backoff factory and its policy's
// NextBackOff and Reset, the WithProgress callback, the logger, and the
// client's own gRPC interceptors, which run in goroutines of the
// Manager's — may panic without taking the process down. A panic in a
// callback the call depends on ends it with a *CallbackError naming the
// callback (Join first removes the learner it added); a panic in an
// observer (logger, progress) does not change what the call does and is
// reported in its error.
func TestCallbackPanicsContained(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t, testenv.WithMaxLearners(2))
	direct := c.Client()
	callbackErr := func(t *testing.T, err error, callback string) *etcdmember.CallbackError {
		t.Helper()
		require.ErrorIs(t, err, etcdmember.ErrCallbackPanicked)
		var ce *etcdmember.CallbackError
		require.ErrorAs(t, err, &ce)
		require.Contains(t, ce.Callback, callback)
		require.Contains(t, err.Error(), callback)
		require.NotEmpty(t, ce.Stack)
		return ce
	}

	t.Run("Join start function", func(t *testing.T) {
		m := newManager(t, direct)
		spec, err := c.NewMemberSpec("s")
		require.NoError(t, err)
		boom := errors.New("start exploded")
		res, err := m.Join(ctx, spec.Name, []string{spec.PeerURL}, etcdmember.JoinOptions{Cleanup: true},
			func(context.Context, string) error { panic(boom) })
		ce := callbackErr(t, err, "start function")
		require.Equal(t, boom, ce.Value)
		require.ErrorIs(t, err, boom, "the panic value, an error, is wrapped")
		require.True(t, res.Added)
		require.True(t, res.CleanedUp, "the learner Join added is removed")
		require.NotContains(t, members(ctx, t, direct), res.Member.ID)
	})

	spec, err := c.NewMemberSpec("never-started")
	require.NoError(t, err)
	id, _ := addLearner(ctx, t, direct, spec) // Promote has to wait for it

	t.Run("backoff factory", func(t *testing.T) {
		m, err := etcdmember.New(direct, etcdmember.WithBackoff(func() backoff.BackOff { panic("factory exploded") }))
		require.NoError(t, err)
		_, err = m.Promote(ctx, id)
		callbackErr(t, err, "WithBackoff factory")
	})
	t.Run("NextBackOff", func(t *testing.T) {
		m, err := etcdmember.New(direct, etcdmember.WithBackoff(func() backoff.BackOff { return &panicky{nextPanics: true} }))
		require.NoError(t, err)
		_, err = m.Promote(ctx, id)
		callbackErr(t, err, "NextBackOff")
		require.Contains(t, err.Error(), hexID(id))
	})
	t.Run("Reset", func(t *testing.T) {
		m, err := etcdmember.New(direct, etcdmember.WithBackoff(func() backoff.BackOff { return &panicky{resetPanics: true} }))
		require.NoError(t, err)
		_, err = m.WaitStarted(ctx, id)
		callbackErr(t, err, "Reset")
	})

	t.Run("WithProgress callback", func(t *testing.T) {
		var calls atomic.Int32
		m := newManager(t, direct, etcdmember.WithProgress(func(etcdmember.Progress) {
			calls.Add(1)
			panic("progress exploded")
		}))
		rep, err := m.PromoteReady(ctx)
		callbackErr(t, err, "WithProgress callback")
		require.Len(t, rep.Learners, 1, "the pass went on: its report is complete")
		require.Equal(t, id, rep.Learners[0].ID)
		require.Equal(t, int32(1), calls.Load(), "not called again after it panicked")
	})

	t.Run("logger", func(t *testing.T) {
		sink := &panicSink{}
		m := newManager(t, direct, etcdmember.WithLogger(logr.New(sink)))
		s2, err := c.NewMemberSpec("logged")
		require.NoError(t, err)
		mem, err := m.AddLearner(ctx, s2.Name, []string{s2.PeerURL})
		callbackErr(t, err, "logger")
		require.NotZero(t, mem.ID, "the result says what happened")
		require.Contains(t, members(ctx, t, direct), mem.ID, "the add went through")
		res, err := m.Remove(ctx, mem.ID, etcdmember.RemoveOptions{})
		callbackErr(t, err, "logger")
		require.False(t, res.AlreadyAbsent)
		require.NotContains(t, members(ctx, t, direct), mem.ID)
		require.Equal(t, int32(2), sink.calls.Load(), "called once per call, then left alone")
	})

	t.Run("client interceptor in the Manager's goroutines", func(t *testing.T) {
		// Remove reads every voter's status from goroutines of its own;
		// the client's interceptor panics there.
		cli, err := c.NewClientConfig(clientv3.Config{
			Endpoints: []string{c.Member(0).ClientURL},
			DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(
				func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
					if method == rpcStatus {
						panic("interceptor exploded")
					}
					return invoker(ctx, method, req, reply, cc, opts...)
				})},
		})
		require.NoError(t, err)
		m := newManager(t, cli)
		_, err = m.Remove(ctx, c.Member(0).ID(), etcdmember.RemoveOptions{})
		require.ErrorIs(t, err, etcdmember.ErrWouldLoseQuorum, "a voter whose status probe panicked counts as unhealthy")
		require.Contains(t, members(ctx, t, direct), c.Member(0).ID())
	})
}

// countingBackOff returns delay from every NextBackOff and counts the
// calls.
type countingBackOff struct {
	delay time.Duration
	n     *atomic.Int64
}

func (b countingBackOff) NextBackOff() time.Duration { b.n.Add(1); return b.delay }
func (b countingBackOff) Reset()                     {}

// TestBackoffFloor: a policy that returns zero or a negative delay (other
// than backoff.Stop) does not make a call spin: every wait lasts at least
// MinRetryInterval, so in any stretch of time there are at most that many
// attempts.
func TestBackoffFloor(t *testing.T) {
	c := newCluster(t)
	direct := c.Client()
	ctx := testCtx(t)
	spec, err := c.NewMemberSpec("never-started")
	require.NoError(t, err)
	id, _ := addLearner(ctx, t, direct, spec)

	for _, d := range []time.Duration{0, -2, -time.Hour, time.Nanosecond} {
		t.Run(fmt.Sprint(d), func(t *testing.T) {
			var n atomic.Int64
			m, err := etcdmember.New(direct, etcdmember.WithBackoff(func() backoff.BackOff { return countingBackOff{d, &n} }))
			require.NoError(t, err)
			cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer cancel()
			t0 := time.Now()
			_, err = m.Promote(cctx, id)
			elapsed := time.Since(t0)
			require.ErrorIs(t, err, context.DeadlineExceeded)
			require.Greater(t, n.Load(), int64(1), "it retried")
			require.LessOrEqual(t, n.Load(), int64(elapsed/etcdmember.MinRetryInterval)+1,
				"%d waits in %s: shorter than MinRetryInterval", n.Load(), elapsed)
		})
	}
}

// TestNamesThatBreakInitialCluster: names that cannot go into
// --initial-cluster are refused before any RPC, naming the name.
func TestNamesThatBreakInitialCluster(t *testing.T) {
	cli, counter := deadClient(t)
	m := newManager(t, cli)
	ctx := testCtx(t)
	start := func(context.Context, string) error { return nil }
	for _, name := range []string{"", "a,b", "a=b", "a b", "a\tb", "a\nb", "\x00", "a\x7fb", " a", "a\u00a0b", "\xff"} {
		_, err := m.AddLearner(ctx, name, []string{"http://127.0.0.1:2380"})
		require.ErrorIs(t, err, etcdmember.ErrInvalidArgument, "%q", name)
		if name != "" {
			require.Contains(t, err.Error(), fmt.Sprintf("%q", name))
		}
		_, err = m.Join(ctx, name, []string{"http://127.0.0.1:2380"}, etcdmember.JoinOptions{}, start)
		require.ErrorIs(t, err, etcdmember.ErrInvalidArgument, "%q", name)
	}
	require.Zero(t, counter.total(), "%v", counter.snapshot())
}

// TestZonedIPv6PeerURL: a link-local IPv6 peer URL with a zone is valid to
// url.Parse and to etcd; it stays valid through canonicalization and is
// added with one MemberAdd (it used to be rewritten into an URL the client
// rejects locally, an error then retried until the deadline).
func TestZonedIPv6PeerURL(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t)
	counter := newRPCCounter()
	m := newManager(t, countingClient(t, c, counter, c.Endpoints()...))
	const zoned = "http://[fe80::1%25lo]:2380"
	mem, err := m.AddLearner(ctx, "zoned", []string{zoned})
	require.NoError(t, err)
	require.Equal(t, []string{zoned}, mem.PeerURLs)
	require.Equal(t, 1, counter.count(rpcMemberAdd))
	require.Equal(t, []string{zoned}, members(ctx, t, c.Client())[mem.ID].PeerURLs)

	// Idempotent: found by its peer URL.
	again, err := m.AddLearner(ctx, "zoned", []string{"HTTP://[FE80::1%25lo]:2380"})
	require.NoError(t, err)
	require.Equal(t, mem.ID, again.ID)
	require.Equal(t, 1, counter.count(rpcMemberAdd))
}
