package apiserverdisco

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

var (
	// ErrInvalidAddress is wrapped by every error about an address that is
	// not "host:port" with a port in 1-65535 and IPv6 hosts in brackets.
	ErrInvalidAddress = errors.New("apiserverdisco: invalid address")

	// ErrInvalidID is wrapped by every error about a server ID that is
	// empty, contains '/', whitespace or control characters, or is longer
	// than 253 bytes.
	ErrInvalidID = errors.New("apiserverdisco: invalid server ID")

	// ErrNotYetSet is wrapped, next to the context's error, by
	// WaitForAddresses and Next when their context ends before the source
	// has produced any address at all: the k3s "apiserver addresses not yet
	// set" state, which is a normal waiting state and not a failure. The
	// error also says why (the source's State.Reason). Watcher.State shows
	// the same state without waiting.
	ErrNotYetSet = errors.New("apiserverdisco: apiserver addresses not yet set")

	// ErrInvalidInput is wrapped by every error about bad input from the
	// caller, returned before anything is started or written, naming the
	// argument: a nil context or client (typed nils included: a nil
	// *kubernetes.Clientset or *fake.Clientset in a kubernetes.Interface,
	// a nil *clientv3.Client or one not made by clientv3.New), a bad prefix
	// or LegacyKey program, a nil or bad Option or an option given to the
	// wrong call, the zero Source, a bad ID or address given to Publish
	// (those wrap ErrInvalidID or ErrInvalidAddress too), WaitForAddresses
	// with n < 1, and a method called on a nil Watcher or Registration. It
	// is not wrapped by
	// MalformedValueError: bad data found in etcd or in EndpointSlices is
	// not the caller's input.
	ErrInvalidInput = errors.New("apiserverdisco: invalid input")

	// ErrCallbackPanicked is wrapped by every *PanicError: code the caller
	// supplied (an error handler, a logger's sink, a backoff policy, a
	// client implementation) panicked while this package ran it, and the
	// panic was recovered.
	ErrCallbackPanicked = errors.New("apiserverdisco: a callback panicked")

	// ErrClosed is the reason a Watcher or Registration reports (Err) after
	// its Close method was called, and is wrapped by the errors its blocking
	// methods return afterwards.
	ErrClosed = errors.New("apiserverdisco: closed")
)

// invalidInputError is a caller's bad input: its message is err's, and it
// matches both ErrInvalidInput and whatever err wraps.
type invalidInputError struct{ err error }

func (e *invalidInputError) Error() string   { return e.err.Error() }
func (e *invalidInputError) Unwrap() []error { return []error{ErrInvalidInput, e.err} }

// invalidInput is fmt.Errorf for errors that must wrap ErrInvalidInput.
func invalidInput(format string, args ...any) error {
	return &invalidInputError{err: fmt.Errorf(format, args...)}
}

// MalformedValueError describes one value a source could not use, or could
// use only in part: bad JSON, a key whose last element is not a valid
// server ID, a record with a bad address, a legacy address list with
// invalid entries, an EndpointSlice without a usable port or with invalid
// endpoint addresses; or a key under a LegacyKeyWriter's election prefix
// that is not a candidate's (see LegacyWriterElectionPrefix). What is
// unusable is skipped; every other address, and the last good address of
// the same key, is kept. Watchers and LegacyKeyWriters pass these errors
// to the WithErrorHandler function and log them, once per value: a value
// with many bad entries is one error (Count says how many), and a value
// seen again unchanged (a re-list after a compaction or an outage,
// another event on an EndpointSlice that did not change, another scan of
// the election) is not reported again.
type MalformedValueError struct {
	// Key names where the value was found: the etcd key, or
	// "EndpointSlice default/<name>".
	Key string
	// Value is the offending value, cut to 256 bytes: the whole etcd value,
	// or for an EndpointSlice the first offending endpoint address (empty
	// when the slice has no usable port).
	Value string
	// Count is how many entries of a list were invalid and skipped: entries
	// of a legacy address list, addresses of an EndpointSlice's endpoints.
	// It is 0 when the value as a whole is unusable.
	Count int
	// Entries are the first invalid entries (at most MaxReportedEntries),
	// each cut to 256 bytes, in the order they appear; nil when Count is 0.
	Entries []string
	// Err says what is wrong: with Count > 0 it wraps the reason of each
	// entry in Entries. It wraps ErrInvalidAddress or ErrInvalidID where
	// one of those is the reason.
	Err error
}

// MaxReportedEntries is how many invalid entries of one value a
// MalformedValueError lists (its Count has the total).
const MaxReportedEntries = 5

func (e *MalformedValueError) Error() string {
	if e.Count > 0 {
		quoted := make([]string, len(e.Entries))
		for i, v := range e.Entries {
			quoted[i] = strconv.Quote(v)
		}
		more := ""
		if e.Count > len(e.Entries) {
			more = fmt.Sprintf(" and %d more", e.Count-len(e.Entries))
		}
		return fmt.Sprintf("apiserverdisco: malformed value at %s: %d invalid entries skipped (%s%s): %v",
			e.Key, e.Count, strings.Join(quoted, ", "), more, e.Err)
	}
	return fmt.Sprintf("apiserverdisco: malformed value at %s (%q): %v", e.Key, e.Value, e.Err)
}

// Unwrap returns the underlying reason.
func (e *MalformedValueError) Unwrap() error { return e.Err }

func newMalformed(key string, value []byte, err error) *MalformedValueError {
	return &MalformedValueError{Key: key, Value: cut(string(value)), Err: err}
}

// cut shortens v to 256 bytes.
func cut(v string) string {
	if len(v) > 256 {
		v = v[:256] + "..."
	}
	return v
}

// badEntries collects the invalid entries of one list value, keeping the
// first MaxReportedEntries and counting the rest.
type badEntries struct {
	count   int
	entries []string
	errs    []error
}

func (b *badEntries) add(entry string, err error) {
	b.count++
	if len(b.entries) < MaxReportedEntries {
		b.entries = append(b.entries, cut(entry))
		b.errs = append(b.errs, err)
	}
}

// malformed returns the one error for the value, nil if no entry was bad;
// total is the number of entries in the value.
func (b *badEntries) malformed(key, value string, total int) *MalformedValueError {
	if b.count == 0 {
		return nil
	}
	format := fmt.Sprintf("%d of %d entries are invalid: ", b.count, total) + strings.Repeat("%w; ", len(b.errs))
	args := make([]any, len(b.errs))
	for i, err := range b.errs {
		args[i] = err
	}
	return &MalformedValueError{
		Key:     key,
		Value:   cut(value),
		Count:   b.count,
		Entries: b.entries,
		Err:     fmt.Errorf(strings.TrimSuffix(format, "; "), args...),
	}
}

// errorClass is how a failure from etcd is handled. Every etcd error a loop
// in this package sees goes through classify, and nowhere else compares
// server errors.
type errorClass int

const (
	// transient: retry after the next backoff delay.
	transient errorClass = iota
	// compacted: the watch fell behind the compaction; re-list at once.
	compacted
	// denied: the credentials lack a permission; retried like a transient
	// error (an operator may fix it) but logged as an error.
	denied
)

func classify(err error) errorClass {
	switch {
	case errors.Is(err, rpctypes.ErrCompacted):
		return compacted
	case errors.Is(err, rpctypes.ErrPermissionDenied),
		errors.Is(err, rpctypes.ErrAuthFailed),
		errors.Is(err, rpctypes.ErrInvalidAuthToken),
		errors.Is(err, rpctypes.ErrUserEmpty):
		return denied
	}
	return transient
}

// isLeaseNotFound reports whether a Revoke failed only because the lease is
// already gone, which is what Close and re-publishing want anyway.
func isLeaseNotFound(err error) bool {
	return errors.Is(err, rpctypes.ErrLeaseNotFound)
}
