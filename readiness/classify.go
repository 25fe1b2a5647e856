package readiness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// This file is the one place where server and transport errors are sorted
// into the package's sentinels (ErrUnreachable, ErrAccessDenied).

// accessDeniedHint says what a 401/403 means for the caller.
const accessDeniedHint = "check the credentials and the RBAC rules documented in package readiness"

// classifyHTTP sorts an error from client-go or net/http: 401/403 wrap
// ErrAccessDenied, an error with no HTTP response wraps ErrUnreachable,
// anything else is returned as is.
func classifyHTTP(err error) error {
	switch {
	case err == nil:
		return nil
	case apierrors.IsUnauthorized(err), apierrors.IsForbidden(err):
		return fmt.Errorf("%w: %w (%s)", ErrAccessDenied, err, accessDeniedHint)
	case noResponse(err):
		return fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	return err
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
