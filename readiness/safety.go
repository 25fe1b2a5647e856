package readiness

import (
	"errors"
	"fmt"
	"reflect"
	"sync"

	"github.com/go-logr/logr"
)

// This file holds what keeps user code from taking the host process down:
// the panic error, guarded calls, the typed-nil test, and a logger that
// survives a panicking sink.

// panicError is a recovered panic (or runtime.Goexit) of the user code
// what. It wraps ErrPanic and, when the panic value is an error, that
// error too.
type panicError struct {
	what  string
	value any
}

func (e *panicError) Error() string {
	if e.value == nil {
		return fmt.Sprintf("%s %s: its goroutine exited without returning (runtime.Goexit)", e.what, ErrPanic)
	}
	return fmt.Sprintf("%s %s: %v", e.what, ErrPanic, e.value)
}

func (e *panicError) Unwrap() []error {
	if err, ok := e.value.(error); ok {
		return []error{ErrPanic, err}
	}
	return []error{ErrPanic}
}

// guarded calls f and hands its result to done. If f panics (or calls
// runtime.Goexit), done gets a permanent *panicError naming what instead,
// and the panic goes no further. done is called exactly once, also when
// the goroutine is exiting through runtime.Goexit, so that the goroutines
// of this package always report.
func guarded(what string, f func() error, done func(error)) {
	var err error
	finished := false
	defer func() {
		if !finished {
			err = Permanent(&panicError{what: what, value: recover()})
		}
		done(err)
	}()
	err = f()
	finished = true
}

// protect calls f in the calling goroutine and returns its error, or a
// permanent *panicError naming what if f panics.
func protect(what string, f func() error) (err error) {
	guarded(what, f, func(e error) { err = e })
	return err
}

// isNil reports whether v is nil or an interface holding a nil pointer,
// map, slice, channel or func: a value whose methods are likely to panic.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Chan, reflect.Func, reflect.Interface, reflect.UnsafePointer:
		return rv.IsNil()
	}
	return false
}

// nilArg returns the invalid-input error for argument what of function fn
// being nil, naming the nil value's type when it is a typed nil:
// "StaticPodReady: nil kubernetes.Interface (a nil *fake.Clientset)".
func nilArg(fn, what string, v any) error {
	if v == nil {
		return invalid("%s: nil %s", fn, what)
	}
	return invalid("%s: nil %s (a nil %T)", fn, what, v)
}

// fault records the first panic of user code that runs beside Wait's loop
// (the Watcher, the logger) for the loop to report.
type fault struct {
	mu  sync.Mutex
	err error
}

func (f *fault) set(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

func (f *fault) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// safeLogger returns l with a sink that recovers its own panics, handing
// them to note, so that a broken logger cannot kill the process. A logger
// without a sink discards.
func safeLogger(l logr.Logger, note func(v any)) logr.Logger {
	sink := l.GetSink()
	if isNil(sink) {
		return logr.Discard()
	}
	s := &safeSink{sink: sink, note: note}
	// One more frame, ours, between the caller and the sink.
	if d, ok := s.WithCallDepth(1).(*safeSink); ok {
		s = d
	}
	return logr.New(s).V(l.GetV())
}

// safeSink is a logr.LogSink that recovers the panics of the sink it wraps.
type safeSink struct {
	sink logr.LogSink
	note func(v any)
}

var _ logr.CallDepthLogSink = (*safeSink)(nil)

// recover must be deferred directly: it recovers a panic of the wrapped
// sink.
func (s *safeSink) recover() {
	if v := recover(); v != nil {
		s.note(v)
	}
}

// Init does nothing: the wrapped sink was initialized by the logger it
// came from.
func (s *safeSink) Init(logr.RuntimeInfo) {}

func (s *safeSink) Enabled(level int) bool {
	defer s.recover()
	return s.sink.Enabled(level)
}

func (s *safeSink) Info(level int, msg string, kv ...any) {
	defer s.recover()
	s.sink.Info(level, msg, kv...)
}

func (s *safeSink) Error(err error, msg string, kv ...any) {
	defer s.recover()
	s.sink.Error(err, msg, kv...)
}

func (s *safeSink) WithValues(kv ...any) (sink logr.LogSink) {
	sink = s
	defer s.recover()
	return s.wrap(s.sink.WithValues(kv...))
}

func (s *safeSink) WithName(name string) (sink logr.LogSink) {
	sink = s
	defer s.recover()
	return s.wrap(s.sink.WithName(name))
}

func (s *safeSink) WithCallDepth(depth int) (sink logr.LogSink) {
	sink = s
	defer s.recover()
	if cd, ok := s.sink.(logr.CallDepthLogSink); ok {
		return s.wrap(cd.WithCallDepth(depth))
	}
	return s
}

// wrap wraps a sink derived from s's, keeping s if it is nil.
func (s *safeSink) wrap(derived logr.LogSink) logr.LogSink {
	if isNil(derived) {
		return s
	}
	return &safeSink{sink: derived, note: s.note}
}

// errString is err.Error() for an error that came from user code, safe to
// call on any value: a nil error is "<nil>", and an Error method that
// panics (a typed nil with a pointer receiver does) gives a description
// of the value instead of the panic.
func errString(err error) (s string) {
	if err == nil {
		return "<nil>"
	}
	defer func() {
		if v := recover(); v != nil {
			s = fmt.Sprintf("(a %T whose Error method panicked: %v)", err, v)
		}
	}()
	return err.Error()
}

// checkError vets the error a check (named what) returned: a typed nil —
// a non-nil error interface holding a nil pointer, map, slice or func,
// the classic "var e *MyErr; return e" — becomes a permanent ErrInvalid
// error naming what and the type, since its methods are likely to panic
// and no retry changes what the code returns. Any other error is
// returned as is.
func checkError(what string, err error) error {
	if err == nil || !isNil(err) {
		return err
	}
	return invalid("%s returned a nil %T as its error (a non-nil error interface holding a nil value; return a plain nil for \"ready\")", what, err)
}

// sameError reports whether a and b are the same error value, without
// the panic of == on two interfaces holding the same uncomparable type
// (a struct error with a slice field, say): those are compared deeply.
func sameError(a, b error) (same bool) {
	defer func() {
		if recover() != nil {
			same = reflect.DeepEqual(a, b)
		}
	}()
	return a == b
}

// safeIs is errors.Is for an error from user code, run where a panic of
// its Unwrap or Is methods would go unrecovered (in the callback of
// guarded): such a panic counts as no match.
func safeIs(err, target error) (is bool) {
	defer func() {
		if recover() != nil {
			is = false
		}
	}()
	return errors.Is(err, target)
}
