package apiserverdisco

import (
	"errors"
	"fmt"

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
	// set" state, which is a normal waiting state and not a failure.
	ErrNotYetSet = errors.New("apiserverdisco: apiserver addresses not yet set")

	// ErrInvalidInput is wrapped by every error about bad input from the
	// caller, returned before anything is started or written: a nil
	// client, a bad prefix or LegacyKey program, a nil or bad Option or an
	// option given to the wrong call, the zero Source, a bad ID or address
	// given to Publish (those wrap ErrInvalidID or ErrInvalidAddress too),
	// and WaitForAddresses with n < 1. It is not wrapped by
	// MalformedValueError: bad data found in etcd or in EndpointSlices is
	// not the caller's input.
	ErrInvalidInput = errors.New("apiserverdisco: invalid input")

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

// MalformedValueError describes one value a source could not use: bad JSON,
// a bad address, a key whose last element is not a valid server ID, or an
// EndpointSlice without a usable port. The value is skipped; every other
// address, and the last good address of the same key, is kept. Watchers pass
// these errors to the WithErrorHandler function and log them.
type MalformedValueError struct {
	// Key names where the value was found: the etcd key, or
	// "EndpointSlice default/<name>".
	Key string
	// Value is the offending value (the whole etcd value, one entry of a
	// legacy address list, or an endpoint address), cut to 256 bytes.
	Value string
	// Err says what is wrong with it; it wraps ErrInvalidAddress or
	// ErrInvalidID where one of those is the reason.
	Err error
}

func (e *MalformedValueError) Error() string {
	return fmt.Sprintf("apiserverdisco: malformed value at %s (%q): %v", e.Key, e.Value, e.Err)
}

// Unwrap returns the underlying reason.
func (e *MalformedValueError) Unwrap() error { return e.Err }

func newMalformed(key string, value []byte, err error) *MalformedValueError {
	v := string(value)
	if len(v) > 256 {
		v = v[:256] + "..."
	}
	return &MalformedValueError{Key: key, Value: v, Err: err}
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
