package apiserverdisco

import (
	"context"
	"sync"

	"github.com/cenkalti/backoff/v4"
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
	name string
	err  error // bad input found by the constructor, returned by NewWatcher
	run  func(ctx context.Context, s *sink) error
}

// String names the source, e.g. `etcd prefix "/kubeboot/apiservers/"`.
func (s Source) String() string {
	if s.name == "" {
		return "zero Source"
	}
	return s.name
}

// sink is what a running source reports to. set and notYetSet are
// goroutine-safe; the Watcher's loop takes the latest set.
type sink struct {
	log logr.Logger
	o   *options

	errMu sync.Mutex // serializes calls of o.onError

	mu     sync.Mutex
	latest []string
	has    bool
	notify chan struct{} // capacity 1: "latest has changed"
}

func newSink(o *options, log logr.Logger) *sink {
	return &sink{log: log, o: o, notify: make(chan struct{}, 1)}
}

func (s *sink) newBackoff() backoff.BackOff { return s.o.newBackoff() }

// report passes err to the error handler, one call at a time: a source
// may report from more than one goroutine (an informer's handlers and its
// reflector).
func (s *sink) report(err error) {
	if s.o.onError == nil {
		return
	}
	s.errMu.Lock()
	defer s.errMu.Unlock()
	s.o.onError(err)
}

// set reports the source's current full set. An empty set means "every
// key is gone, as observed"; use notYetSet when the source does not know.
func (s *sink) set(addrs []string) {
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

// notYetSet records that the source has no set to offer (no keys, an empty
// legacy value): the Watcher keeps what it has. It is a normal waiting
// state and only logged at debug verbosity.
func (s *sink) notYetSet(reason string) {
	s.log.V(1).Info("addresses not yet set; keeping the last good set", "reason", reason)
}

// malformed reports a skipped value.
func (s *sink) malformed(err *MalformedValueError) {
	s.log.Error(err, "skipping a malformed address value", "key", err.Key)
	s.report(err)
}

// failed reports a failed request that will be retried after retryIn.
func (s *sink) failed(err error, class errorClass, retryIn string) {
	if class == denied {
		s.log.Error(err, "permission denied; retrying", "retryIn", retryIn)
	} else {
		s.log.Info("request failed; retrying", "error", err.Error(), "retryIn", retryIn)
	}
	s.report(err)
}
