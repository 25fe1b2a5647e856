package apiserverdisco

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// Snapshot is a set of apiserver addresses as delivered by a Watcher.
type Snapshot struct {
	// Addresses are "host:port" strings, sorted and de-duplicated, in
	// canonical form (IPv6 in brackets). Each Snapshot has its own copy.
	Addresses []string
	// Version counts deliveries: 0 means nothing delivered yet ("not yet
	// set"); each delivery of a different set adds one. Whether the source
	// says "not yet set" right now (it may, while the last good set is
	// kept) is in the Watcher's State.
	Version uint64
}

// State is what a Watcher knows right now, for a node agent to report, for
// example "waiting: apiserver addresses not yet set (etcd key
// \"k3s/apiaddresses\": the key does not exist)".
type State struct {
	// Snapshot is the latest delivered set, as Current returns it.
	Snapshot Snapshot
	// NotYetSet is true while the source has no address set to offer:
	// before it was first read, and whenever its last reading was "not yet
	// set" — a list that found no key under an EtcdPrefix, a LegacyKey
	// that is missing, empty or holds no valid address, EndpointSlices not
	// synced or without a ready endpoint. Meanwhile the Watcher keeps the
	// last good set (Snapshot), so NotYetSet with Snapshot.Version > 0
	// means "was set, and is not now". A set the source has read, even one
	// still held back by the debounce, and an empty set EtcdPrefix saw
	// happen (every key deleted or expired) make it false.
	NotYetSet bool
	// Reason names the source and says why it is not yet set, e.g. `etcd
	// key "k3s/apiaddresses": the key does not exist` or `etcd prefix
	// "/kubeboot/apiservers/": not read yet`; "" when NotYetSet is false.
	Reason string
	// Since is when NotYetSet last changed (or the Watcher started).
	Since time.Time
	// LastError is the last failure of a request to the source (to be
	// retried), nil once the source has been read since. While NotYetSet is
	// true and LastError is not nil, the source could not be read at all.
	LastError error
}

// Watcher follows the live set of apiserver addresses from one Source and
// delivers it: sorted, de-duplicated, only when it changed; additions at
// once, removals debounced (WithDebounce). It never replaces a non-empty
// set with an empty one because of a failure, a restart or a re-list; an
// empty set is delivered only when the keys were seen to go away (and,
// with WithEmptyHoldDown, stayed away), which only EtcdPrefix reports.
//
// Delivery is pull-based: Next blocks until a set newer than the one it
// last returned is available and returns the latest one, so a slow
// consumer skips intermediate sets instead of queueing them; Current reads
// without waiting; WaitForAddresses waits for a minimum size. No channel
// is exposed, so no consumer can block the Watcher.
//
// A Watcher runs its own goroutines from NewWatcher until its context ends
// or Close returns. Its methods are safe for concurrent use.
type Watcher struct {
	name   string
	log    logr.Logger
	src    *sink
	cancel context.CancelCauseFunc
	done   chan struct{}

	mu      sync.Mutex
	snap    Snapshot
	changed chan struct{} // closed and replaced at each delivery, closed at the end
	cursor  uint64        // the Version Next last returned
	err     error         // why the Watcher stopped, once done
}

// NewWatcher starts watching src and returns at once; use
// WaitForAddresses or Next to wait for addresses, State to see why there
// are none yet. Options: WithDebounce, WithEmptyHoldDown, WithErrorHandler,
// WithBackoff, WithLogger, WithRequestTimeout.
//
// ctx bounds the Watcher's life: when it ends, the Watcher stops as if
// Close had been called, and Err reports the context's cause. An invalid
// Source (a nil or typed-nil client, a bad prefix, the zero Source), a nil
// ctx or a bad option is an error here, wrapping ErrInvalidInput and
// naming the argument; problems met while running are retried, never
// fatal, and reported through WithErrorHandler and the logger. A panic in
// the source's goroutine (in a client implementation the caller supplied)
// is recovered: it stops the Watcher, and Err returns the *PanicError.
func NewWatcher(ctx context.Context, src Source, opts ...Option) (*Watcher, error) {
	if err := checkContext(ctx, "NewWatcher"); err != nil {
		return nil, err
	}
	if src.run == nil && src.err == nil {
		return nil, invalidInput("apiserverdisco: NewWatcher: zero Source; use EtcdPrefix, LegacyKey or EndpointSlices")
	}
	if src.err != nil {
		return nil, src.err
	}
	o, log, err := buildOptions(ctx, forWatch, opts)
	if err != nil {
		return nil, err
	}
	log = log.WithValues("source", src.name)
	wctx, cancel := context.WithCancelCause(ctx)
	w := &Watcher{
		name:    src.name,
		log:     log,
		cancel:  cancel,
		done:    make(chan struct{}),
		changed: make(chan struct{}),
	}
	s := newSink(src.name, &o, log)
	w.src = s
	d := &debouncer{debounce: o.debounce, holdDown: o.holdDown}
	go w.loop(wctx, src, s, d)
	return w, nil
}

// loop runs the source in its own goroutine and turns what it reports
// into deliveries, until ctx ends or the source gives up.
func (w *Watcher) loop(ctx context.Context, src Source, s *sink, d *debouncer) {
	srcDone := make(chan error, 1)
	go func() {
		err := protect(w.name, func() error { return src.run(ctx, s) })
		if errors.Is(err, ErrCallbackPanicked) {
			s.rep.panicked(err)
		}
		srcDone <- err
	}()

	var timer *time.Timer
	var timerC <-chan time.Time
	apply := func(dec decision) {
		if dec.deliver {
			w.deliver(dec.set)
		}
		if timer != nil {
			timer.Stop()
			timer, timerC = nil, nil
		}
		if !dec.wake.IsZero() {
			timer = time.NewTimer(time.Until(dec.wake))
			timerC = timer.C
		}
	}
	var stopErr error
	for stopErr == nil {
		select {
		case <-ctx.Done():
			<-srcDone
			stopErr = context.Cause(ctx)
		case err := <-srcDone:
			if err == nil {
				err = context.Cause(ctx)
			}
			if err == nil {
				err = fmt.Errorf("apiserverdisco: %s stopped", w.name)
			}
			stopErr = err
		case <-s.notify:
			if addrs, ok := s.take(); ok {
				apply(d.update(time.Now(), addrs))
			}
		case <-timerC:
			timer, timerC = nil, nil
			apply(d.tick(time.Now()))
		}
	}
	if timer != nil {
		timer.Stop()
	}
	w.cancel(stopErr)
	w.mu.Lock()
	w.err = stopErr
	close(w.changed)
	w.mu.Unlock()
	w.log.V(1).Info("watcher stopped", "reason", stopErr.Error())
	close(w.done)
}

func (w *Watcher) deliver(set []string) {
	w.mu.Lock()
	w.snap = Snapshot{Addresses: set, Version: w.snap.Version + 1}
	close(w.changed)
	w.changed = make(chan struct{})
	v := w.snap.Version
	w.mu.Unlock()
	w.log.Info("apiserver addresses changed", "addresses", set, "version", v)
}

// Current returns the latest delivered Snapshot without blocking; its
// Version is 0 while nothing has been delivered. On a nil Watcher it
// returns the zero Snapshot.
func (w *Watcher) Current() Snapshot {
	if w.invalid() {
		return Snapshot{}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.snap.clone()
}

// State returns what the Watcher knows right now without blocking: the
// current Snapshot, and whether (and why) the source says "not yet set".
// On a nil Watcher it returns a State with NotYetSet true and a Reason
// saying so.
func (w *Watcher) State() State {
	if w.invalid() {
		return State{NotYetSet: true, Reason: "not a Watcher from NewWatcher"}
	}
	st := w.src.current()
	st.Snapshot = w.Current()
	return st
}

// current returns the latest Snapshot and a channel closed at the next
// delivery (or when the Watcher stops).
func (w *Watcher) current() (Snapshot, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.snap.clone(), w.changed
}

// invalid reports a nil or zero Watcher (not made by NewWatcher).
func (w *Watcher) invalid() bool { return w == nil || w.done == nil }

var errNotAWatcher = invalidInput("apiserverdisco: the Watcher is nil or was not made by NewWatcher")

func (s Snapshot) clone() Snapshot {
	return Snapshot{Addresses: slices.Clone(s.Addresses), Version: s.Version}
}

// Next blocks until a Snapshot newer than the one Next last returned has
// been delivered, and returns the latest one (the first call returns the
// first set as soon as there is one). Sets delivered while nobody called
// Next are skipped, not queued: Version shows how many there were. Next
// is meant for one consumer loop; concurrent callers share the position,
// so each Snapshot goes to one of them.
//
// When ctx ends first, Next returns an error wrapping ctx.Err() (and
// ErrNotYetSet if nothing was ever delivered) that names the source and the
// last version returned. Once the Watcher has stopped (Done is closed),
// Next returns an error wrapping the reason (ErrClosed after Close), even
// if a Snapshot was delivered that Next has not returned yet: Current
// still reads the last one.
func (w *Watcher) Next(ctx context.Context) (Snapshot, error) {
	if w.invalid() {
		return Snapshot{}, errNotAWatcher
	}
	if err := checkContext(ctx, "Next"); err != nil {
		return Snapshot{}, err
	}
	for {
		w.mu.Lock()
		snap, cursor, ch, stopped := w.snap, w.cursor, w.changed, w.err
		if stopped == nil && snap.Version > cursor {
			w.cursor = snap.Version
			w.mu.Unlock()
			return snap.clone(), nil
		}
		w.mu.Unlock()
		if stopped != nil {
			return Snapshot{}, w.stoppedErr(stopped)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			if snap.Version == 0 {
				return Snapshot{}, fmt.Errorf("apiserverdisco: waiting for the first address set from %s: %w%s: %w", w.name, ErrNotYetSet, w.why(), ctx.Err())
			}
			return Snapshot{}, fmt.Errorf("apiserverdisco: waiting for a change from %s after version %d: %w", w.name, cursor, ctx.Err())
		}
	}
}

// WaitForAddresses blocks until the delivered set has at least n addresses
// and returns it; it does not move Next's position. "Not yet set" is the
// normal state it waits through. n must be at least 1.
//
// When ctx ends first, it returns an error wrapping ctx.Err() that names
// the source and what it had so far (and wraps ErrNotYetSet if nothing at
// all). Once the Watcher has stopped (Done is closed), it returns an
// error wrapping the reason (ErrClosed after Close), whatever set it had:
// a caller looping until an error ends; Current still reads the last set.
func (w *Watcher) WaitForAddresses(ctx context.Context, n int) ([]string, error) {
	if w.invalid() {
		return nil, errNotAWatcher
	}
	if err := checkContext(ctx, "WaitForAddresses"); err != nil {
		return nil, err
	}
	if n < 1 {
		return nil, invalidInput("apiserverdisco: WaitForAddresses(%d): n must be at least 1", n)
	}
	for {
		w.mu.Lock()
		snap, ch, stopped := w.snap, w.changed, w.err
		w.mu.Unlock()
		if stopped != nil {
			return nil, w.stoppedErr(stopped)
		}
		if len(snap.Addresses) >= n {
			return slices.Clone(snap.Addresses), nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			if snap.Version == 0 {
				return nil, fmt.Errorf("apiserverdisco: waiting for %d apiserver address(es) from %s: %w%s: %w", n, w.name, ErrNotYetSet, w.why(), ctx.Err())
			}
			return nil, fmt.Errorf("apiserverdisco: waiting for %d apiserver address(es) from %s: have %d (%s): %w",
				n, w.name, len(snap.Addresses), strings.Join(snap.Addresses, ", "), ctx.Err())
		}
	}
}

// why says why the source has no set, for errors wrapping ErrNotYetSet:
// " (<reason>; last error: <err>)", or "" when the source has one.
func (w *Watcher) why() string {
	st := w.src.current()
	if !st.NotYetSet {
		return ""
	}
	if st.LastError != nil {
		return fmt.Sprintf(" (%s; last error: %v)", st.Reason, st.LastError)
	}
	return fmt.Sprintf(" (%s)", st.Reason)
}

func (w *Watcher) stoppedErr(reason error) error {
	if errors.Is(reason, ErrClosed) {
		return fmt.Errorf("apiserverdisco: watcher of %s: %w", w.name, reason)
	}
	return fmt.Errorf("apiserverdisco: watcher of %s stopped: %w", w.name, reason)
}

// Done returns a channel closed once the Watcher has stopped and all its
// goroutines have returned (already closed for a nil Watcher).
func (w *Watcher) Done() <-chan struct{} {
	if w.invalid() {
		return closedChan
	}
	return w.done
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Err returns nil while the Watcher runs; once Done is closed, why it
// stopped: ErrClosed after Close, the context's cause, or the error that
// ended its source (an etcd client that was closed, a *PanicError). It
// does not block. For a nil Watcher it returns an error wrapping
// ErrInvalidInput.
func (w *Watcher) Err() error {
	if w.invalid() {
		return errNotAWatcher
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Close stops the Watcher and waits until its goroutines have returned;
// blocked Next and WaitForAddresses calls, and every later one, return an
// error wrapping ErrClosed. It returns nil, and may be called more than once; on a nil
// Watcher it returns an error wrapping ErrInvalidInput.
func (w *Watcher) Close() error {
	if w.invalid() {
		return errNotAWatcher
	}
	w.cancel(ErrClosed)
	<-w.done
	return nil
}
