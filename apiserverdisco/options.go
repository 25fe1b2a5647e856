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

// Option configures Publish or NewWatcher. Some options apply to only one
// of them (said in their comments); passing one to the other is an error.
// Every error about an option wraps ErrInvalidInput.
type Option func(*options) error

type scope int

const (
	forPublish scope = 1 << iota
	forWatch
	forLegacyWriter
)

var scopeNames = map[scope]string{forPublish: "Publish", forWatch: "NewWatcher", forLegacyWriter: "StartLegacyKeyWriter"}

type options struct {
	prefix         string
	ttl            time.Duration
	debounce       time.Duration
	holdDown       time.Duration
	requestTimeout time.Duration
	onError        func(error)
	newBackoff     func() backoff.BackOff
	logger         *logr.Logger
	base           logr.Logger // the caller's logger, unwrapped
	rep            *reporter   // built from onError and the logger

	misplaced []string // options given to the call they do not apply to
	call      scope
}

func (o *options) only(s scope, name string) {
	if o.call&s == 0 {
		o.misplaced = append(o.misplaced, name)
	}
}

// buildOptions applies opts for call, and returns the options and the
// package's logger, wrapped so that a panicking sink is recovered (see
// reporter). ctx must not be nil.
func buildOptions(ctx context.Context, call scope, opts []Option) (options, logr.Logger, error) {
	o := options{
		prefix:         DefaultPrefix,
		ttl:            DefaultTTL,
		debounce:       DefaultDebounce,
		requestTimeout: DefaultRequestTimeout,
		newBackoff:     defaultBackoff,
		call:           call,
	}
	for i, opt := range opts {
		if opt == nil {
			return o, logr.Discard(), invalidInput("apiserverdisco: %s: option %d is a nil Option", scopeNames[call], i)
		}
		if err := opt(&o); err != nil {
			return o, logr.Discard(), err
		}
	}
	if len(o.misplaced) > 0 {
		return o, logr.Discard(), invalidInput("apiserverdisco: %s does not apply to %s", strings.Join(o.misplaced, ", "), scopeNames[call])
	}
	log := logr.FromContextOrDiscard(ctx)
	if o.logger != nil {
		log = *o.logger
	}
	if s := log.GetSink(); s != nil && isNil(s) {
		// A typed-nil sink in the context's logger: not the caller's
		// argument, so log nothing rather than refuse.
		log = logr.Discard()
	}
	o.base = log
	o.rep = newReporter(o.onError, log, "apiserverdisco")
	return o, o.rep.log, nil
}

// checkContext refuses a nil context (or an interface holding a nil
// pointer), which would panic on first use.
func checkContext(ctx context.Context, call string) error {
	if isNil(ctx) {
		return invalidInput("apiserverdisco: %s: ctx is a nil context.Context (%T)", call, ctx)
	}
	return nil
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

// maxTTL is etcd's maximum lease TTL (lease.MaxLeaseTTL, 9,000,000,000
// seconds): etcd refuses to grant a longer lease.
const maxTTL = 9_000_000_000 * time.Second

// WithTTL sets the lease TTL of a published address, or of a
// LegacyKeyWriter's election lease (default DefaultTTL), rounded up to
// whole seconds; etcd may raise very short TTLs to its minimum. It must be
// at least one second and at most etcd's maximum lease TTL, 9,000,000,000
// seconds (about 285 years); anything else is an error wrapping
// ErrInvalidInput. For Publish and StartLegacyKeyWriter.
func WithTTL(ttl time.Duration) Option {
	return func(o *options) error {
		o.only(forPublish|forLegacyWriter, "WithTTL")
		if ttl < time.Second {
			return invalidInput("apiserverdisco: WithTTL(%s): the TTL must be at least 1s", ttl)
		}
		if ttl > maxTTL {
			return invalidInput("apiserverdisco: WithTTL(%s): the TTL must be at most etcd's maximum lease TTL, %ds", ttl, int64(maxTTL/time.Second))
		}
		o.ttl = ttl
		return nil
	}
}

// leaseSeconds is ttl rounded up to whole seconds, without overflow for
// any positive ttl.
func leaseSeconds(ttl time.Duration) int64 {
	secs := int64(ttl / time.Second)
	if ttl%time.Second > 0 {
		secs++
	}
	return secs
}

// WithDebounce sets how long a set that drops an address must stay
// unchanged before the Watcher delivers it (default DefaultDebounce); if it
// keeps changing, it is delivered at the latest five debounce periods after
// the first change (five periods longer than the longest time.Duration
// count as that longest duration, about 292 years). Sets that only add
// addresses, and the first set a Watcher learns, are delivered at once.
// So an apiserver that flaps yields one delivery (or none), and a new one
// is used without delay. Zero delivers every change at once; negative is
// an error. For NewWatcher and StartLegacyKeyWriter (its Watcher).
func WithDebounce(d time.Duration) Option {
	return func(o *options) error {
		o.only(forWatch|forLegacyWriter, "WithDebounce")
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

// WithErrorHandler has a Watcher, Registration or LegacyKeyWriter call f
// with every problem it meets and gets past: a *MalformedValueError for a
// value it skipped, a failed request it will retry, or a *PanicError for
// code of the caller's that panicked and was recovered (a logger's sink, a
// backoff policy, a client implementation). Calls come from the
// component's own goroutines, one at a time; f must return quickly and
// must not call the component's Close. A panic in f is recovered and
// logged. The errors are logged as well. For Publish, NewWatcher and
// StartLegacyKeyWriter.
func WithErrorHandler(f func(error)) Option {
	return func(o *options) error {
		if f == nil {
			return invalidInput("apiserverdisco: WithErrorHandler(nil)")
		}
		o.onError = f
		return nil
	}
}

// WithBackoff sets the retry policy: newBackoff is called for a fresh
// policy each time a loop starts retrying (a Watcher after a failed list or
// watch, a Registration after losing its lease, a LegacyKeyWriter after a
// failed write). The default is exponential from 250ms, factor 2, ±50%
// jitter, capped at 30s, never giving up. A policy that returns
// backoff.Stop means "wait 30s": the loops never give up on their own. A
// delay under MinRetryDelay (zero, or negative other than backoff.Stop) is
// raised to MinRetryDelay. A factory or policy that panics, or a factory
// that returns nil, is reported (a *PanicError, see WithErrorHandler) and
// replaced by the default policy for that retry sequence. For Publish,
// NewWatcher and StartLegacyKeyWriter.
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
// context given to Publish, NewWatcher or StartLegacyKeyWriter). A panic
// in its sink is recovered and passed to the WithErrorHandler function. A
// Logger whose sink is a typed nil is an error. The EndpointSlices source
// also hands it to its client-go informer. For Publish, NewWatcher and
// StartLegacyKeyWriter.
func WithLogger(l logr.Logger) Option {
	return func(o *options) error {
		if s := l.GetSink(); s != nil && isNil(s) {
			return invalidInput("apiserverdisco: WithLogger: the Logger's sink is a nil %T", s)
		}
		o.logger = &l
		return nil
	}
}

// WithRequestTimeout bounds each single etcd request (default
// DefaultRequestTimeout), including the key deletion in
// Registration.Close. It must be positive. For Publish, NewWatcher and
// StartLegacyKeyWriter.
func WithRequestTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return invalidInput("apiserverdisco: WithRequestTimeout(%s): must be positive", d)
		}
		o.requestTimeout = d
		return nil
	}
}
