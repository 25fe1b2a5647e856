package readiness

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// This file is the one place where server and transport errors are sorted
// into the package's sentinels (ErrUnreachable, ErrAccessDenied,
// ErrInvalid for what the client rejects before sending anything).

// accessDeniedHint says what a 401/403 means for the caller.
const accessDeniedHint = "check the credentials and the RBAC rules documented in package readiness"

// classifyHTTP sorts an error from client-go or net/http: 401/403 wrap
// ErrAccessDenied, an error the client raised before sending anything
// that no retry can fix wraps ErrInvalid (see clientSide), another error
// with no HTTP response wraps ErrUnreachable, anything else is returned
// as is. The caller names the thing and returns the result through
// settle, which makes the ErrInvalid ones permanent.
func classifyHTTP(err error) error {
	switch {
	case err == nil:
		return nil
	case apierrors.IsUnauthorized(err), apierrors.IsForbidden(err):
		return fmt.Errorf("%w: %w (%s)", ErrAccessDenied, err, accessDeniedHint)
	case clientSide(err):
		return fmt.Errorf("%w: %w (%s)", ErrInvalid, err, clientSideHint)
	case noResponse(err):
		return fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	return err
}

// clientSideHint says what an ErrInvalid from clientSide means.
const clientSideHint = "the client rejected its own configuration before sending anything; retrying cannot help"

// noSuitableAddress is the text of the one *net.AddrError that depends on
// what a name resolves to (only addresses of the other IP family), which
// can change: it is not counted as a client-side error.
const noSuitableAddress = "no suitable address found"

// clientSide reports whether err was raised by the client itself, from
// its own configuration, before anything was sent, so that no retry can
// succeed: an address the dialer cannot use (*net.AddrError: port out of
// range, malformed host:port; net.InvalidAddrError,
// net.UnknownNetworkError, *net.ParseError), a URL that does not parse
// (*url.Error from url.Parse), no usable root certificates on this
// system (x509.SystemRootsError). A name that does not resolve, a refused
// connection or a certificate the server presents are not: those can
// change.
func clientSide(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var (
		addrErr    *net.AddrError
		invalid    net.InvalidAddrError
		unknownNet net.UnknownNetworkError
		parseErr   *net.ParseError
		roots      x509.SystemRootsError
	)
	switch {
	case errors.As(err, &addrErr):
		return addrErr.Err != noSuitableAddress
	case errors.As(err, &invalid), errors.As(err, &unknownNet), errors.As(err, &parseErr), errors.As(err, &roots):
		return true
	}
	return inTree(err, func(e error) bool {
		u, ok := e.(*url.Error)
		return ok && u.Op == "parse"
	})
}

// inTree reports whether f holds for err or any error it wraps.
func inTree(err error, f func(error) bool) bool {
	for err != nil {
		if f(err) {
			return true
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if inTree(e, f) {
					return true
				}
			}
			return false
		default:
			return false
		}
	}
	return false
}

// settle is the last step of every built-in check: an error wrapping
// ErrInvalid (bad input, or what the client rejected before sending
// anything) is made permanent, so that Wait returns it at once instead of
// retrying until its deadline. Other errors, and nil, are returned as is.
func settle(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := isPermanent(err); ok || !errors.Is(err, ErrInvalid) {
		return err
	}
	return Permanent(err)
}

// classifyHTTPStatus sorts a non-accepted HTTP status code.
func classifyHTTPStatus(code int) error {
	switch code {
	case 401, 403:
		return ErrAccessDenied
	case 0:
		return ErrUnreachable
	}
	return nil
}

// noResponse reports whether err means the server never answered (dial,
// TLS or connection failure) rather than answering with a status. Context
// errors are not counted: they mean we stopped waiting.
func noResponse(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return false
	}
	var (
		urlErr *url.Error
		netErr net.Error
		opErr  *net.OpError
	)
	return errors.As(err, &urlErr) || errors.As(err, &netErr) || errors.As(err, &opErr)
}

// classifyEtcd sorts an error from the etcd client: authentication and
// permission failures wrap ErrAccessDenied; anything else is returned as
// is (etcd's gRPC errors carry only a string; rpctypes has its values).
func classifyEtcd(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, rpctypes.ErrPermissionDenied),
		errors.Is(err, rpctypes.ErrAuthFailed),
		errors.Is(err, rpctypes.ErrInvalidAuthToken),
		errors.Is(err, rpctypes.ErrInvalidAuthMgmt),
		errors.Is(err, rpctypes.ErrUserEmpty):
		return fmt.Errorf("%w: %w", ErrAccessDenied, err)
	}
	return err
}

// etcdReadDenied reports whether a read failed only for lack of permission:
// like etcdctl endpoint health, that still proves the cluster answered.
func etcdReadDenied(err error) bool {
	return errors.Is(err, rpctypes.ErrPermissionDenied)
}
