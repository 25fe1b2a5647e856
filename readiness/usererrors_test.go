package readiness_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr/funcr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kubeboot/kubeboot/readiness"
)

// myErr has a pointer receiver: a nil *myErr in an error panics in Error.
type myErr struct{ msg string }

func (e *myErr) Error() string { return e.msg }

// explodingErr is a non-nil error whose Error method panics.
type explodingErr struct{}

func (*explodingErr) Error() string { panic("Error exploded") }

// listErr is an uncomparable error type: == on two of them panics.
type listErr struct{ items []string }

func (e listErr) Error() string { return "bad items: " + strings.Join(e.items, ", ") }

// A check returning a typed nil as its error (the classic "var e *MyErr;
// return e") is the check's failure, said as such: a permanent ErrInvalid
// error naming the check and the type, at the first attempt — not a panic
// blamed on the backoff policy or the logger, which format the error.
// The same inside Named, All and Any.
func TestCheckReturningTypedNilError(t *testing.T) {
	ctx := testCtx(t)
	typedNil := readiness.CheckFunc(func(context.Context) error {
		var e *myErr
		return e
	})
	ok := readiness.CheckFunc(func(context.Context) error { return nil })
	// A verbose logger formats every not-ready reason.
	var mu sync.Mutex
	var logged []string
	logger := funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		logged = append(logged, args)
	}, funcr.Options{Verbosity: 1})

	for _, tt := range []struct {
		name  string
		check readiness.Check
		want  string
	}{
		{"check", typedNil, "the check returned a nil *readiness_test.myErr as its error"},
		{"Named", readiness.Named("mine", typedNil), `mine: readiness: invalid input: the check "mine" returned a nil *readiness_test.myErr as its error`},
		{"All", readiness.All(ok, typedNil), "All: check 2 of 2 (check) returned a nil *readiness_test.myErr as its error"},
		{"Any", readiness.Any(typedNil), "Any: check 1 of 1 (check) returned a nil *readiness_test.myErr as its error"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			attempt, attempts := observer()
			err := readiness.Wait(ctx, tt.check, attempt, readiness.WithLogger(logger))
			require.Error(t, err)
			t.Log(err)
			assert.ErrorIs(t, err, readiness.ErrInvalid)
			assert.NotErrorIs(t, err, readiness.ErrPanic, "a typed nil is not a panic of anything")
			assert.NotContains(t, err.Error(), "backoff policy")
			assert.NotContains(t, err.Error(), "logger")
			assert.Contains(t, err.Error(), tt.want)
			var nr *readiness.NotReadyError
			require.ErrorAs(t, err, &nr)
			assert.Equal(t, 1, nr.Attempts, "permanent: no retry")
			require.Len(t, attempts, 1)
		})
	}
}

// An error whose Error method panics, or whose type is not comparable, is
// still a plain not-ready reason: Wait formats it safely (its log lines
// and the *NotReadyError's message describe it) and does not blame the
// panic on the backoff policy, the logger, or anything else.
func TestCheckErrorsFormattedSafely(t *testing.T) {
	ctx := testCtx(t)
	var mu sync.Mutex
	var logged []string
	logger := funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		logged = append(logged, args)
	}, funcr.Options{Verbosity: 1})

	t.Run("Error panics", func(t *testing.T) {
		exploding := readiness.CheckFunc(func(context.Context) error { return &explodingErr{} })
		attempt, attempts := observer()
		short, cancel := context.WithCancel(ctx)
		defer cancel()
		done := goWait(short, exploding, attempt, readiness.WithLogger(logger))
		// Two failing attempts: the first one's reason went through the
		// backoff policy and the log line between them.
		awaitAttempt(t, attempts, done, "the second attempt fails", func(a readiness.Attempt) bool { return a.N == 2 && a.Err != nil })
		cancel()
		err := awaitDone(t, done, "Error panics")
		require.ErrorIs(t, err, context.Canceled)
		assert.NotErrorIs(t, err, readiness.ErrPanic)
		var nr *readiness.NotReadyError
		require.ErrorAs(t, err, &nr)
		var last *explodingErr
		assert.ErrorAs(t, nr.Last, &last, "the reason is the check's error")
		msg := err.Error() // must not panic
		t.Log(msg)
		assert.NotContains(t, msg, "backoff policy")
		assert.Contains(t, msg, "Error exploded")
		mu.Lock()
		defer mu.Unlock()
		assert.True(t, containsAny(logged, "*readiness_test.explodingErr whose Error method panicked"), "logged: %q", logged)
	})

	t.Run("uncomparable permanent error", func(t *testing.T) {
		bad := listErr{items: []string{"a", "b"}}
		check := readiness.CheckFunc(func(context.Context) error { return readiness.Permanent(bad) })
		err := readiness.Wait(ctx, check, readiness.WithLogger(logger))
		require.Error(t, err)
		var nr *readiness.NotReadyError
		require.ErrorAs(t, err, &nr)
		var got listErr
		require.ErrorAs(t, nr.Err, &got)
		msg := nr.Error() // Err and Last hold the same uncomparable value: must not panic
		assert.Contains(t, msg, "bad items: a, b")
		assert.Equal(t, 1, strings.Count(msg, "bad items"), "the reason is said once: %s", msg)
		assert.Len(t, nr.Unwrap(), 1)
	})
}

func containsAny(lines []string, part string) bool {
	for _, l := range lines {
		if strings.Contains(l, part) {
			return true
		}
	}
	return false
}
