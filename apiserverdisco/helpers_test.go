package apiserverdisco_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"

	"github.com/kubeboot/kubeboot/apiserverdisco"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// guard is the generous deadline every wait in these tests runs under: a
// failure guard, never a measurement.
const guard = 60 * time.Second

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*guard)
	t.Cleanup(cancel)
	return ctx
}

// minutesBackoff makes any retry take ten minutes: whatever happens within
// a test's deadline came through a watch, not a retry.
func minutesBackoff() backoff.BackOff { return backoff.NewConstantBackOff(10 * time.Minute) }

// broadcast is a "something changed" signal for test recorders.
type broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

func (b *broadcast) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

func (b *broadcast) signal() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
}

// awaitCond re-evaluates cond each time b signals, failing after guard.
func awaitCond(t testing.TB, b *broadcast, what string, cond func() bool, detail ...func() string) {
	t.Helper()
	deadline := time.NewTimer(guard)
	defer deadline.Stop()
	for {
		ch := b.wait()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			var more []string
			for _, d := range detail {
				more = append(more, d())
			}
			t.Fatalf("waited %s for %s %s", guard, what, strings.Join(more, " "))
		}
	}
}

// logRecorder is a logr sink that keeps every line, for tests that await
// what a component said it was doing.
type logRecorder struct {
	b      broadcast
	mu     sync.Mutex
	lines  []string
	errors []string
}

func newLogRecorder() (*logRecorder, logr.Logger) {
	r := &logRecorder{}
	return r, logr.New(&recordSink{r: r})
}

func (r *logRecorder) add(line string, isErr bool) {
	r.mu.Lock()
	r.lines = append(r.lines, line)
	if isErr {
		r.errors = append(r.errors, line)
	}
	r.mu.Unlock()
	r.b.signal()
}

func (r *logRecorder) count(substr string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, l := range r.lines {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

func (r *logRecorder) errorLines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.errors)
}

func (r *logRecorder) waitFor(t testing.TB, substr string) {
	t.Helper()
	awaitCond(t, &r.b, fmt.Sprintf("a log line containing %q", substr), func() bool { return r.count(substr) > 0 })
}

type recordSink struct {
	r      *logRecorder
	name   string
	values []any
}

func (s *recordSink) Init(logr.RuntimeInfo)  {}
func (s *recordSink) Enabled(level int) bool { return level <= 1 }
func (s *recordSink) Info(level int, msg string, kv ...any) {
	s.r.add(s.format("info", msg, kv), false)
}
func (s *recordSink) Error(err error, msg string, kv ...any) {
	s.r.add(s.format("error", msg, append(kv, "error", err)), true)
}
func (s *recordSink) WithValues(kv ...any) logr.LogSink {
	return &recordSink{r: s.r, name: s.name, values: append(slices.Clone(s.values), kv...)}
}
func (s *recordSink) WithName(name string) logr.LogSink {
	return &recordSink{r: s.r, name: s.name + "/" + name, values: s.values}
}
func (s *recordSink) format(level, msg string, kv []any) string {
	return fmt.Sprintf("%s %s %q %v", level, s.name, msg, append(slices.Clone(s.values), kv...))
}

// errorLog collects what a Watcher passes to its error handler.
type errorLog struct {
	b    broadcast
	mu   sync.Mutex
	errs []error
}

func (l *errorLog) handle(err error) {
	l.mu.Lock()
	l.errs = append(l.errs, err)
	l.mu.Unlock()
	l.b.signal()
}

func (l *errorLog) all() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.errs)
}

// malformedAt returns the MalformedValueErrors reported for key.
func (l *errorLog) malformedAt(key string) []*apiserverdisco.MalformedValueError {
	var out []*apiserverdisco.MalformedValueError
	for _, err := range l.all() {
		var me *apiserverdisco.MalformedValueError
		if errors.As(err, &me) && me.Key == key {
			out = append(out, me)
		}
	}
	return out
}

// waitMalformed waits until a malformed value at key was reported and
// checks that the error names the key.
func (l *errorLog) waitMalformed(t testing.TB, key string) *apiserverdisco.MalformedValueError {
	t.Helper()
	awaitCond(t, &l.b, "a malformed-value report for "+key, func() bool { return len(l.malformedAt(key)) > 0 })
	me := l.malformedAt(key)[0]
	if !strings.Contains(me.Error(), key) {
		t.Fatalf("the error %q does not name the key %q", me.Error(), key)
	}
	return me
}

func (l *errorLog) waitCount(t testing.TB, n int, what string) {
	t.Helper()
	awaitCond(t, &l.b, what, func() bool { return len(l.all()) >= n })
}

// recorder keeps every Snapshot a consumer loop gets from Next.
type recorder struct {
	b      broadcast
	mu     sync.Mutex
	snaps  []apiserverdisco.Snapshot
	pos    int // snapshots before pos were matched by an earlier waitSet
	cancel context.CancelFunc
	done   chan struct{}
}

func record(t testing.TB, w *apiserverdisco.Watcher) *recorder {
	ctx, cancel := context.WithCancel(context.Background())
	r := &recorder{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			s, err := w.Next(ctx)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.snaps = append(r.snaps, s)
			r.mu.Unlock()
			r.b.signal()
		}
	}()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

func (r *recorder) all() []apiserverdisco.Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.snaps)
}

// waitSet waits until the consumer got exactly want, in a Snapshot after
// the one the previous waitSet matched, and returns that Snapshot.
func (r *recorder) waitSet(t testing.TB, want ...string) apiserverdisco.Snapshot {
	t.Helper()
	var got apiserverdisco.Snapshot
	awaitCond(t, &r.b, fmt.Sprintf("the set %q", want), func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for i := r.pos; i < len(r.snaps); i++ {
			if slices.Equal(r.snaps[i].Addresses, want) {
				got, r.pos = r.snaps[i], i+1
				return true
			}
		}
		return false
	}, func() string { return fmt.Sprintf("(got %v)", r.all()) })
	return got
}

// partition cuts every connection through p and drops all traffic until
// heal; heal lets traffic through and cuts the connections that were
// opened meanwhile (their handshakes were lost), so clients reconnect
// cleanly and no half-delivered stream is resumed.
func partition(p *testenv.Proxy) { p.Blackhole(true); p.ResetAll() }
func heal(p *testenv.Proxy)      { p.Pass(); p.ResetAll() }

// rpcCounter counts the gRPC calls an etcd client makes: unary calls and
// stream opens by method, and messages sent on streams (each watch created
// is one message on the Watch stream).
type rpcCounter struct {
	mu     sync.Mutex
	unary  map[string]int
	opens  map[string]int
	stream map[string]int
}

func newRPCCounter() *rpcCounter {
	return &rpcCounter{unary: map[string]int{}, opens: map[string]int{}, stream: map[string]int{}}
}

func (c *rpcCounter) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			c.mu.Lock()
			c.unary[method]++
			c.mu.Unlock()
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			c.mu.Lock()
			c.opens[method]++
			c.mu.Unlock()
			s, err := streamer(ctx, desc, cc, method, opts...)
			if err != nil {
				return nil, err
			}
			return &countedStream{ClientStream: s, c: c, method: method}, nil
		}),
	}
}

type countedStream struct {
	grpc.ClientStream
	c      *rpcCounter
	method string
}

func (s *countedStream) SendMsg(m any) error {
	s.c.mu.Lock()
	s.c.stream[s.method]++
	s.c.mu.Unlock()
	return s.ClientStream.SendMsg(m)
}

const (
	rangeMethod = "/etcdserverpb.KV/Range"
	watchMethod = "/etcdserverpb.Watch/Watch"
)

func (c *rpcCounter) snapshot() (ranges, watchOpens, watchMsgs int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.unary[rangeMethod], c.opens[watchMethod], c.stream[watchMethod]
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
