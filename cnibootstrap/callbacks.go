package cnibootstrap

import (
	"fmt"
	"runtime/debug"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// This file keeps the host process alive: the code the caller supplies
// (Conditions, the WithProgress function, the WithBackoff factory and its
// policies, the logger's sink, and the clients in Clients) runs under
// recover, and a panic becomes a *PanicError.

// PanicError is a panic recovered from code the caller supplied and this
// package ran. Callback names it: "the Condition of <requirement>", "the
// WithProgress function", "the WithBackoff factory", "NextBackOff of the
// WithBackoff policy", "Reset of the WithBackoff policy", "the logger's
// sink", or "a client in Clients". A panicking Condition leaves its
// requirement unmet, with the *PanicError as the Unmet entry's Err (the
// Condition is called again on the next change); any other panic ends
// Wait or Check at once with an error that wraps the *PanicError and,
// for the waiter's own goroutines, names the requirements it served.
type PanicError struct {
	// Callback names the code that panicked.
	Callback string
	// Value is what it panicked with.
	Value any
	// Stack is the goroutine's stack at the panic.
	Stack string
}

func (e *PanicError) Error() string {
	if e == nil {
		return "<nil>"
	}
	return fmt.Sprintf("%s panicked: %v", e.Callback, e.Value)
}

// Unwrap returns ErrCallbackPanicked, and the panic value if it is an error.
func (e *PanicError) Unwrap() []error {
	if e == nil {
		return nil
	}
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

// checkCondition calls the Condition of requirement name on obj; a panic
// is its error, a *PanicError.
func checkCondition(name string, c Condition, obj *unstructured.Unstructured) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = newPanicError("the Condition of "+name, v)
		}
	}()
	return c(obj)
}

// safeLogger wraps l's sink so that a panic in it is passed to onPanic
// instead of unwinding the goroutine that logs. A logger without a sink
// (the zero Logger) discards and is returned as it is; one whose sink is a
// typed nil (from the context: WithLogger rejects it) discards too.
//
// The caller's sink is not initialised again (safeSink.Init does nothing:
// the logger it came from did that, and a sink's Init may mutate state
// the caller shares, as funcr's does): the one frame this wrapper adds is
// told to a sink that implements logr.CallDepthLogSink through
// WithCallDepth, which derives a new sink. l's verbosity (V) is kept.
func safeLogger(l logr.Logger, onPanic func(error)) logr.Logger {
	sink := l.GetSink()
	switch {
	case sink == nil:
		return l
	case isNil(sink):
		return logr.Discard()
	}
	s := &safeSink{sink: sink, onPanic: onPanic}
	// One more frame, ours, between the code that logs and the sink.
	if d, ok := s.WithCallDepth(1).(*safeSink); ok {
		s = d
	}
	return logr.New(s).V(l.GetV())
}

// safeSink forwards to the caller's LogSink under recover.
type safeSink struct {
	sink    logr.LogSink
	onPanic func(error)
}

var _ logr.CallDepthLogSink = (*safeSink)(nil)

func (s *safeSink) recovered() {
	if v := recover(); v != nil {
		s.onPanic(newPanicError("the logger's sink", v))
	}
}

// Init does nothing: the wrapped sink was initialised by the logger it
// came from.
func (s *safeSink) Init(logr.RuntimeInfo) {}

func (s *safeSink) Enabled(level int) bool {
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

// WithCallDepth passes depth on to the wrapped sink when it implements
// logr.CallDepthLogSink; otherwise the sink stays as it is.
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
