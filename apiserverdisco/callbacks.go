package apiserverdisco

import (
	"fmt"
	"reflect"
	"runtime/debug"
	"sync"

	"github.com/go-logr/logr"
)

// This file keeps the host process alive: every piece of code the caller
// supplies (the error handler, the logger's sink, the backoff policy and
// its factory, a Kubernetes client, an etcd client's KV, Lease or Watcher
// implementation) runs here under recover, and a panic becomes a
// *PanicError reported like any other failure.

// PanicError is a panic recovered from code the caller supplied and this
// package ran, or a nil it returned where a value was needed (a backoff
// factory's policy, a client's list or watch), or a watch event of a
// client's that was dropped because its object is nil or of the wrong
// type, any of which would have panicked: Callback
// names it ("the WithErrorHandler function", "the
// logger's sink", "the WithBackoff factory", "NextBackOff of the WithBackoff
// policy", "the Kubernetes client (list EndpointSlices)", "the etcd client
// (list)"...). It is reported through WithErrorHandler and the logger (a
// panicking logger through the error handler only, a panicking error
// handler through the logger only), and the component goes on: a panicking
// backoff policy is replaced by the default one for that retry sequence,
// and a failed request is retried.
type PanicError struct {
	// Callback names the code that panicked.
	Callback string
	// Value is what it panicked with; for a nil result or a dropped
	// event, an error saying what the code returned or delivered.
	Value any
	// Stack is the goroutine's stack at the panic.
	Stack string
}

func (e *PanicError) Error() string {
	if n, ok := e.Value.(nilResult); ok {
		return fmt.Sprintf("apiserverdisco: %s %s", e.Callback, string(n))
	}
	return fmt.Sprintf("apiserverdisco: %s panicked: %v", e.Callback, e.Value)
}

// nilResult is the Value of a PanicError for a callback that returned nil
// where a value was needed.
type nilResult string

func (n nilResult) Error() string { return string(n) }

// Unwrap returns ErrCallbackPanicked, and the panic value if it is an error.
func (e *PanicError) Unwrap() []error {
	if err, ok := e.Value.(error); ok {
		return []error{ErrCallbackPanicked, err}
	}
	return []error{ErrCallbackPanicked}
}

func newPanicError(callback string, v any) *PanicError {
	return &PanicError{Callback: callback, Value: v, Stack: string(debug.Stack())}
}

// protect runs f, turning a panic in it into a *PanicError naming what.
func protect(what string, f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = newPanicError(what, v)
		}
	}()
	return f()
}

// isNil reports whether v is nil or an interface holding a nil pointer,
// map, func, slice or channel: a typed nil, which would panic on first use.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Func, reflect.Interface, reflect.Slice, reflect.Chan, reflect.UnsafePointer:
		return rv.IsNil()
	}
	return false
}

// reporter passes problems to the caller's error handler and logger, so
// that neither can crash the goroutine that reports: a panic in the error
// handler is logged, a panic in the logger's sink is passed to the error
// handler, and a panic while reporting a panic is dropped (there is
// nowhere left to report it).
type reporter struct {
	mu      sync.Mutex  // serializes calls of onError
	onError func(error) // nil without WithErrorHandler
	log     logr.Logger // reports its own panics to onError
	quiet   logr.Logger // the same sink, dropping its panics
}

// newReporter wraps l's sink before anything calls it (even WithName,
// which a sink may implement and which may panic), then names the loggers
// name. l's verbosity level is kept.
func newReporter(onError func(error), l logr.Logger, name string) *reporter {
	r := &reporter{onError: onError}
	sink := l.GetSink()
	if sink == nil {
		r.log, r.quiet = l, l
		return r
	}
	v := l.GetV()
	r.log = logr.New(&safeSink{sink: sink, onPanic: r.handle}).V(v).WithName(name)
	r.quiet = logr.New(&safeSink{sink: sink}).V(v).WithName(name)
	return r
}

// handle calls the error handler, if any, under recover, one call at a
// time: a component may report from more than one goroutine (an
// informer's handlers and its reflector).
func (r *reporter) handle(err error) {
	if r.onError == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	defer func() {
		if v := recover(); v != nil {
			pe := newPanicError("the WithErrorHandler function", v)
			r.quiet.Error(pe, "the error handler panicked; recovered", "reporting", err.Error())
		}
	}()
	r.onError(err)
}

// safeSink forwards to the caller's LogSink under recover.
type safeSink struct {
	sink    logr.LogSink
	onPanic func(error) // nil: drop
}

func (s *safeSink) recovered() {
	if v := recover(); v != nil && s.onPanic != nil {
		s.onPanic(newPanicError("the logger's sink", v))
	}
}

func (s *safeSink) Init(info logr.RuntimeInfo) {
	defer s.recovered()
	info.CallDepth++ // this wrapper is one more frame
	s.sink.Init(info)
}

func (s *safeSink) Enabled(level int) (on bool) {
	defer s.recovered()
	return s.sink.Enabled(level)
}

func (s *safeSink) Info(level int, msg string, kv ...any) {
	defer s.recovered()
	s.sink.Info(level, msg, kv...)
}

func (s *safeSink) Error(err error, msg string, kv ...any) {
	defer s.recovered()
	s.sink.Error(err, msg, kv...)
}

func (s *safeSink) WithValues(kv ...any) logr.LogSink {
	return s.derive(func() logr.LogSink { return s.sink.WithValues(kv...) })
}

func (s *safeSink) WithName(name string) logr.LogSink {
	return s.derive(func() logr.LogSink { return s.sink.WithName(name) })
}

// WithCallDepth implements logr.CallDepthLogSink when the wrapped sink does.
func (s *safeSink) WithCallDepth(depth int) logr.LogSink {
	cd, ok := s.sink.(logr.CallDepthLogSink)
	if !ok {
		return s
	}
	return s.derive(func() logr.LogSink { return cd.WithCallDepth(depth) })
}

// derive wraps the sink f returns; if f panics or returns nil, the sink
// stays as it was.
func (s *safeSink) derive(f func() logr.LogSink) (out logr.LogSink) {
	out = s
	defer s.recovered()
	if next := f(); !isNil(next) {
		out = &safeSink{sink: next, onPanic: s.onPanic}
	}
	return out
}

// problem logs err as an error with msg and passes it to the error handler.
func (r *reporter) problem(err error, msg string, kv ...any) {
	r.log.Error(err, msg, kv...)
	r.handle(err)
}

// panicked reports a recovered panic.
func (r *reporter) panicked(err error) {
	r.problem(err, "recovered a panic in code supplied by the caller")
}

const errNilPolicy = nilResult("returned a nil policy")
