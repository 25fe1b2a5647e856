package apiserverdisco

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// Source is where a Watcher reads addresses from: EtcdPrefix,
// LegacyKey or EndpointSlices. All three produce the same thing — the
// current full set of addresses, or "not yet set" — and the Watcher does
// the rest (sorting, de-duplication, debounce, never-empty). A Source is a
// description and starts nothing by itself; the zero Source is invalid.
// A constructor given bad input (a nil client, a bad prefix) returns a
// Source that NewWatcher refuses with an error wrapping ErrInvalidInput.
type Source struct {
	name      string
	legacyKey string // the key LegacyKey reads, "" for other sources
	err       error  // bad input found by the constructor, returned by NewWatcher
	run       func(ctx context.Context, s *sink) error
}

// String names the source, e.g. `etcd prefix "/kubeboot/apiservers/"`.
func (s Source) String() string {
	if s.name == "" {
		return "zero Source"
	}
	return s.name
}

// sink is what a running source reports to. Its methods are
// goroutine-safe; the Watcher's loop takes the latest set.
type sink struct {
	name string // the source's name, for State.Reason
	log  logr.Logger
	rep  *reporter
	o    *options

	mu     sync.Mutex
	latest []string
	has    bool
	notify chan struct{} // capacity 1: "latest has changed"

	stateMu sync.Mutex
	state   State // without Snapshot
}

func newSink(name string, o *options, log logr.Logger) *sink {
	return &sink{name: name, log: log, rep: o.rep, o: o, notify: make(chan struct{}, 1),
		state: State{NotYetSet: true, Reason: name + ": not read yet", Since: time.Now()}}
}

// newRetrier starts a retry sequence of the caller's policy; its panics
// are reported.
func (s *sink) newRetrier() *retrier { return newRetrier(s.o.newBackoff, s.rep.panicked) }

// set reports the source's current full set. An empty set means "every
// key is gone, as observed"; use notYetSet when the source does not know.
func (s *sink) set(addrs []string) {
	s.setState(false, "", nil)
	s.mu.Lock()
	s.latest, s.has = addrs, true
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// take returns the latest set reported since the last take, if any.
func (s *sink) take() ([]string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	addrs, ok := s.latest, s.has
	s.latest, s.has = nil, false
	return addrs, ok
}

// notYetSet records that the source read successfully and has no set to
// offer (no keys, an empty legacy value): the Watcher keeps what it has,
// and State says why. It is a normal waiting state and only logged at
// debug verbosity.
func (s *sink) notYetSet(reason string) {
	s.setState(true, s.name+": "+reason, nil)
	s.log.V(1).Info("addresses not yet set; keeping the last good set", "reason", reason)
}

func (s *sink) setState(notYet bool, reason string, lastErr error) {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	if notYet != s.state.NotYetSet {
		s.state.Since = time.Now()
	}
	s.state.NotYetSet, s.state.Reason, s.state.LastError = notYet, reason, lastErr
}

// readOK records a successful request to the source: State.LastError is
// cleared, the rest of the state is kept.
func (s *sink) readOK() {
	s.stateMu.Lock()
	s.state.LastError = nil
	s.stateMu.Unlock()
}

// current returns the source's state (without Snapshot).
func (s *sink) current() State {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	return s.state
}

// malformed reports a skipped value.
func (s *sink) malformed(err *MalformedValueError) {
	s.rep.problem(err, "skipping a malformed address value", "key", err.Key)
}

// failed reports a failed request that will be retried after retryIn.
func (s *sink) failed(err error, class errorClass, retryIn string) {
	s.stateMu.Lock()
	s.state.LastError = err
	s.stateMu.Unlock()
	switch {
	case errors.Is(err, ErrCallbackPanicked):
		s.log.Error(err, "recovered a panic in code supplied by the caller; retrying", "retryIn", retryIn)
	case class == denied:
		s.log.Error(err, "permission denied; retrying", "retryIn", retryIn)
	default:
		s.log.Info("request failed; retrying", "error", err.Error(), "retryIn", retryIn)
	}
	s.rep.handle(err)
}
