package hooks

import (
	"fmt"
	"reflect"
	"runtime/debug"
	"sync"

	"github.com/go-logr/logr"
)

// This file holds what keeps user code from taking the host process down
// or the Runner's locks with it: the call of a callback on a goroutine of
// its own, the panic error, the record of panics that do not fail a hook,
// the typed-nil test, and a logger that survives a panicking sink.
//
// The rule, for every lock of the package (Runner.mu, clockMu, obsMu,
// contained.mu): no user code — a hook's callbacks, the observer, the
// clock, the logger's sink, the methods of an error or context the caller
// supplied — runs on a goroutine while it holds the lock, or the lock is
// released by defer and the user code runs on a goroutine of its own
// (isolate), so that neither a panic nor runtime.Goexit can leave a lock
// held. Errors the Runner makes under Runner.mu wrap the caller's errors
// without formatting them (abortError, stopError, notFinishedError): their
// messages are made when asked for.

// goexit is the panic value recorded for a callback that called
// runtime.Goexit, which unwinds its goroutine like a panic, without a
// value, and cannot be recovered from.
type goexit struct{}

// failure is how a callback run by isolate failed to return: its panic
// value (goexit{} for runtime.Goexit) and the stack it failed on.
type failure struct {
	value any
	stack []byte
}

// isolate calls f on a goroutine of its own and waits for it to end. It
// returns nil if f returned, and otherwise how f failed: a panic or a call
// of runtime.Goexit, neither of which reaches the caller's goroutine.
// Writes f makes before it returns are visible to the caller.
func isolate(f func()) *failure {
	done := make(chan *failure, 1)
	go func() {
		returned := false
		defer func() {
			if returned {
				done <- nil
				return
			}
			v := recover()
			if v == nil {
				v = goexit{}
			}
			done <- &failure{value: v, stack: debug.Stack()}
		}()
		f()
		returned = true
	}()
	return <-done
}

// errText returns err's message, calling its Error method on a goroutine
// of its own (isolate): if that panics or calls runtime.Goexit, errText
// says the text is unavailable instead.
func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	var s string
	if isolate(func() { s = err.Error() }) != nil {
		return "(error text unavailable: its Error method panicked or called runtime.Goexit)"
	}
	return s
}

// panicError is a recovered panic (or runtime.Goexit) of the user callback
// what. It wraps ErrPanic and, when the panic value is an error, that
// error too.
type panicError struct {
	what  string
	value any
}

func (e *panicError) Error() string {
	if _, ok := e.value.(goexit); ok {
		return fmt.Sprintf("%s %s: it called runtime.Goexit", e.what, ErrPanic)
	}
	return fmt.Sprintf("%s %s: %v", e.what, ErrPanic, e.value)
}

func (e *panicError) Unwrap() []error {
	if err, ok := e.value.(error); ok {
		return []error{ErrPanic, err}
	}
	return []error{ErrPanic}
}

// errGoexit is the error of a hook's Run or Gate that called
// runtime.Goexit (t.FailNow, say). It wraps ErrPanic. (Other callbacks
// that call runtime.Goexit get a panicError with a goexit value.)
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
// first panics: the first panic, and how many calls panicked. It formats
// nothing (the panic values may be user types with methods of their own):
// the errors' messages are made when asked for.
func (c *contained) errs() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, what := range c.kinds {
		errs = append(errs, &callbackError{count: c.count[what], first: c.first[what]})
	}
	return errs
}

// callbackError is an entry of Report.CallbackErrs.
type callbackError struct {
	count int
	first error
}

func (e *callbackError) Error() string {
	return fmt.Sprintf("%d call(s) recovered, the first: %v", e.count, e.first)
}

func (e *callbackError) Unwrap() error { return e.first }

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

// safeLogger returns l with a sink that calls the sink of l on a goroutine
// of its own for each call, recovering its panics and runtime.Goexit and
// handing them to note, so that a broken logger can neither fail a hook,
// nor kill the process, nor leave a lock held. A logger without a sink (or
// with a typed-nil one) discards.
func safeLogger(l logr.Logger, note func(v any)) logr.Logger {
	sink := l.GetSink()
	if isNil(sink) {
		return logr.Discard()
	}
	return logr.New(&safeSink{sink: sink, note: note}).V(l.GetV())
}

// safeSink is a logr.LogSink that calls the sink it wraps through isolate.
// Call-site information that sink reads from the stack therefore does not
// point at the caller.
type safeSink struct {
	sink logr.LogSink
	note func(v any)
}

var _ logr.CallDepthLogSink = (*safeSink)(nil)

// call calls f through isolate, reporting whether it returned; a panic or
// runtime.Goexit goes to note.
func (s *safeSink) call(f func()) bool {
	if fl := isolate(f); fl != nil {
		s.note(fl.value)
		return false
	}
	return true
}

// Init does nothing: the wrapped sink was initialized by the logger it
// came from.
func (s *safeSink) Init(logr.RuntimeInfo) {}

func (s *safeSink) Enabled(level int) (enabled bool) {
	s.call(func() { enabled = s.sink.Enabled(level) })
	return enabled
}

func (s *safeSink) Info(level int, msg string, kv ...any) {
	s.call(func() { s.sink.Info(level, msg, kv...) })
}

func (s *safeSink) Error(err error, msg string, kv ...any) {
	s.call(func() { s.sink.Error(err, msg, kv...) })
}

func (s *safeSink) WithValues(kv ...any) logr.LogSink {
	var derived logr.LogSink
	s.call(func() { derived = s.sink.WithValues(kv...) })
	return s.wrap(derived)
}

func (s *safeSink) WithName(name string) logr.LogSink {
	var derived logr.LogSink
	s.call(func() { derived = s.sink.WithName(name) })
	return s.wrap(derived)
}

func (s *safeSink) WithCallDepth(depth int) logr.LogSink {
	cd, ok := s.sink.(logr.CallDepthLogSink)
	if !ok {
		return s
	}
	var derived logr.LogSink
	s.call(func() { derived = cd.WithCallDepth(depth) })
	return s.wrap(derived)
}

// wrap wraps a sink derived from s's, keeping s if it is nil (or the call
// that derived it failed).
func (s *safeSink) wrap(derived logr.LogSink) logr.LogSink {
	if isNil(derived) {
		return s
	}
	return &safeSink{sink: derived, note: s.note}
}
