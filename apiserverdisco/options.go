package apiserverdisco

import (
	"context"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-logr/logr"
)

// Defaults used when no Option says otherwise.
const (
	// DefaultPrefix is the etcd prefix under which Publish writes one key
	// per apiserver and EtcdPrefix watches.
	DefaultPrefix = "/kubeboot/apiservers/"
	// DefaultTTL is the lease TTL of a published address: a server that
	// stops refreshing it drops out within this time.
	DefaultTTL = 15 * time.Second
	// DefaultDebounce is how long a Watcher waits for a set that dropped an
	// address to stay unchanged before delivering it.
	DefaultDebounce = 300 * time.Millisecond
	// DefaultRequestTimeout bounds each single etcd request (list, grant,
	// put, delete) and the cleanup in Close.
	DefaultRequestTimeout = 5 * time.Second
)

// maxDelayFactor caps the debounce: a set that keeps changing is still
// delivered at most maxDelayFactor × the debounce after it first changed.
const maxDelayFactor = 5

// stopDelay is the wait used when a caller's backoff policy returns
// backoff.Stop: the loops in this package never give up on their own.
const stopDelay = 30 * time.Second

// Option configures Publish or NewWatcher. Some options apply to only one
// of them (said in their comments); passing one to the other is an error.
// Every error about an option wraps ErrInvalidInput.
type Option func(*options) error

type scope int

const (
	forPublish scope = 1 << iota
	forWatch
)

type options struct {
	prefix         string
	ttl            time.Duration
	debounce       time.Duration
	holdDown       time.Duration
	requestTimeout time.Duration
	onError        func(error)
	newBackoff     func() backoff.BackOff
	logger         *logr.Logger

	misplaced []string // options given to the call they do not apply to
	call      scope
}

func (o *options) only(s scope, name string) {
	if o.call&s == 0 {
		o.misplaced = append(o.misplaced, name)
	}
}

func buildOptions(ctx context.Context, call scope, opts []Option) (options, logr.Logger, error) {
	o := options{
		prefix:         DefaultPrefix,
		ttl:            DefaultTTL,
		debounce:       DefaultDebounce,
		requestTimeout: DefaultRequestTimeout,
		newBackoff:     defaultBackoff,
		call:           call,
	}
	for _, opt := range opts {
		if opt == nil {
			return o, logr.Discard(), invalidInput("apiserverdisco: nil Option")
		}
		if err := opt(&o); err != nil {
			return o, logr.Discard(), err
		}
	}
	if len(o.misplaced) > 0 {
		what := map[scope]string{forPublish: "NewWatcher", forWatch: "Publish"}[call]
		return o, logr.Discard(), invalidInput("apiserverdisco: %s does not apply to %s", strings.Join(o.misplaced, ", "), what)
	}
	log := logr.FromContextOrDiscard(ctx)
	if o.logger != nil {
		log = *o.logger
	}
	return o, log.WithName("apiserverdisco"), nil
}

// WithPrefix sets the etcd prefix Publish writes under (default
// DefaultPrefix); a missing trailing '/' is added. Publish only: a watcher
// takes its prefix from EtcdPrefix.
func WithPrefix(prefix string) Option {
	return func(o *options) error {
		o.only(forPublish, "WithPrefix")
		p, err := cleanPrefix(prefix)
		if err != nil {
			return err
		}
		o.prefix = p
		return nil
	}
}

func cleanPrefix(prefix string) (string, error) {
	if prefix == "" {
		return DefaultPrefix, nil
	}
	if strings.TrimRight(prefix, "/") == "" {
		return "", invalidInput("apiserverdisco: prefix %q would cover the whole key space", prefix)
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return prefix, nil
}

// WithTTL sets the lease TTL of a published address (default DefaultTTL),
// rounded up to whole seconds; etcd may raise very short TTLs to its
// minimum. It must be at least one second. Publish only.
func WithTTL(ttl time.Duration) Option {
	return func(o *options) error {
		o.only(forPublish, "WithTTL")
		if ttl < time.Second {
			return invalidInput("apiserverdisco: WithTTL(%s): the TTL must be at least 1s", ttl)
		}
		o.ttl = ttl
		return nil
	}
}

// WithDebounce sets how long a set that drops an address must stay
// unchanged before the Watcher delivers it (default DefaultDebounce); if it
// keeps changing, it is delivered at the latest five debounce periods after
// the first change. Sets that only add addresses, and the first set a
// Watcher learns, are delivered at once. So an apiserver that flaps yields
// one delivery (or none), and a new one is used without delay. Zero
// delivers every change at once; negative is an error. NewWatcher only.
func WithDebounce(d time.Duration) Option {
	return func(o *options) error {
		o.only(forWatch, "WithDebounce")
		if d < 0 {
			return invalidInput("apiserverdisco: WithDebounce(%s): must not be negative", d)
		}
		o.debounce = d
		return nil
	}
}

// WithEmptyHoldDown makes a Watcher deliver an empty set (every key really
// deleted or expired) only after it has stayed empty for d (default 0: the
// debounce alone). Only EtcdPrefix delivers empty sets; LegacyKey and
// EndpointSlices never do. Negative is an error. NewWatcher only.
func WithEmptyHoldDown(d time.Duration) Option {
	return func(o *options) error {
		o.only(forWatch, "WithEmptyHoldDown")
		if d < 0 {
			return invalidInput("apiserverdisco: WithEmptyHoldDown(%s): must not be negative", d)
		}
		o.holdDown = d
		return nil
	}
}

// WithErrorHandler has the Watcher call f with every problem it meets and
// gets past: a *MalformedValueError for a value it skipped, or a failed
// list or watch it will retry. Calls come from the Watcher's own
// goroutines, one at a time; f must return quickly and must not call the
// Watcher's Close. The errors are logged as well. NewWatcher only.
func WithErrorHandler(f func(error)) Option {
	return func(o *options) error {
		o.only(forWatch, "WithErrorHandler")
		if f == nil {
			return invalidInput("apiserverdisco: WithErrorHandler(nil)")
		}
		o.onError = f
		return nil
	}
}

// WithBackoff sets the retry policy: newBackoff is called for a fresh
// policy each time a loop starts retrying (a Watcher after a failed list or
// watch, a Registration after losing its lease). The default is
// exponential from 250ms, factor 2, ±50% jitter, capped at 30s, never
// giving up. A policy that returns backoff.Stop means "wait 30s": the loops
// never give up on their own. For Publish and NewWatcher.
func WithBackoff(newBackoff func() backoff.BackOff) Option {
	return func(o *options) error {
		if newBackoff == nil {
			return invalidInput("apiserverdisco: WithBackoff(nil)")
		}
		o.newBackoff = newBackoff
		return nil
	}
}

// WithLogger sets the logger (default: logr.FromContextOrDiscard of the
// context given to Publish or NewWatcher). For Publish and NewWatcher.
func WithLogger(l logr.Logger) Option {
	return func(o *options) error {
		o.logger = &l
		return nil
	}
}

// WithRequestTimeout bounds each single etcd request (default
// DefaultRequestTimeout), including the key deletion in
// Registration.Close. It must be positive. For Publish and NewWatcher.
func WithRequestTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return invalidInput("apiserverdisco: WithRequestTimeout(%s): must be positive", d)
		}
		o.requestTimeout = d
		return nil
	}
}

func defaultBackoff() backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 250 * time.Millisecond
	b.Multiplier = 2
	b.RandomizationFactor = 0.5
	b.MaxInterval = 30 * time.Second
	b.MaxElapsedTime = 0
	b.Reset()
	return b
}

// nextDelay returns the policy's next delay, treating Stop as stopDelay.
func nextDelay(b backoff.BackOff) time.Duration {
	d := b.NextBackOff()
	if d == backoff.Stop || d < 0 {
		return stopDelay
	}
	return d
}

// sleepCtx waits for d or until ctx ends, reporting which.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
