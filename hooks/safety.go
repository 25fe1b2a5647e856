package hooks

import (
	"fmt"
	"reflect"
	"sync"

	"github.com/go-logr/logr"
)

// This file holds what keeps user code from taking the host process down:
// the panic error, the record of panics that do not fail a hook, the
// typed-nil test, and a logger that survives a panicking sink.

// panicError is a recovered panic (or runtime.Goexit) of the user callback
// what. It wraps ErrPanic and, when the panic value is an error, that
// error too.
type panicError struct {
	what  string
	value any
}

func (e *panicError) Error() string {
	return fmt.Sprintf("%s %s: %v", e.what, ErrPanic, e.value)
}

func (e *panicError) Unwrap() []error {
	if err, ok := e.value.(error); ok {
		return []error{ErrPanic, err}
	}
	return []error{ErrPanic}
}

// errGoexit is the error of a hook's Run or Gate that called
// runtime.Goexit (t.FailNow, say). It wraps ErrPanic.
var errGoexit error = &subError{"the hook's goroutine exited without returning (runtime.Goexit)", ErrPanic}

// contained records the panics of callbacks that do not fail a hook (the
// observer, the clock, the logger): the first of each, and how many. It
// has its own lock so that it may be used from under Runner.mu.
type contained struct {
	mu    sync.Mutex
	kinds []string // in order of first panic
	first map[string]error
	count map[string]int
}

// note records a panic of callback what and returns its error.
func (c *contained) note(what string, v any) error {
	err := &panicError{what: what, value: v}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.first == nil {
		c.first, c.count = map[string]error{}, map[string]int{}
	}
	if _, seen := c.first[what]; !seen {
		c.kinds = append(c.kinds, what)
		c.first[what] = err
	}
	c.count[what]++
	return err
}

// errs returns one error per callback that panicked, in the order of their
// first panics: the first panic, and how many calls panicked.
func (c *contained) errs() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, what := range c.kinds {
		errs = append(errs, fmt.Errorf("%d call(s) recovered, the first: %w", c.count[what], c.first[what]))
	}
	return errs
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

// safeLogger returns l with a sink that recovers its own panics, handing
// them to note, so that a broken logger cannot fail a hook or kill the
// process. A logger without a sink (or with a typed-nil one) discards.
func safeLogger(l logr.Logger, note func(v any)) logr.Logger {
	sink := l.GetSink()
	if isNil(sink) {
		return logr.Discard()
	}
	s := &safeSink{sink: sink, note: note}
	// One more frame, ours, between the caller and the sink.
	s = s.WithCallDepth(1).(*safeSink)
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
