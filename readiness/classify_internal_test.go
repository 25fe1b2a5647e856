package readiness

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"syscall"
	"testing"
)

// clientSide tells what the client rejected from its own configuration
// (permanent) from what a retry may fix.
func TestClientSideClassification(t *testing.T) {
	//lint:ignore SA1007 a URL that does not parse is the point
	_, parseErr := url.Parse("http://[::1")
	wrap := func(err error) error {
		return &url.Error{Op: "Get", URL: "http://x", Err: &net.OpError{Op: "dial", Net: "tcp", Err: err}}
	}
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"invalid port", wrap(&net.AddrError{Err: "invalid port", Addr: "99999"}), true},
		{"missing port", wrap(&net.AddrError{Err: "missing port in address", Addr: "h"}), true},
		{"unknown network", wrap(net.UnknownNetworkError("tcp7")), true},
		{"URL that does not parse", fmt.Errorf("building the request: %w", parseErr), true},
		{"no system roots", wrap(x509.SystemRootsError{}), true},
		{"no address of the family", wrap(&net.AddrError{Err: noSuitableAddress, Addr: "h"}), false},
		{"name not found", wrap(&net.DNSError{Err: "no such host", Name: "h", IsNotFound: true}), false},
		{"connection refused", wrap(syscall.ECONNREFUSED), false},
		{"unknown authority", wrap(x509.UnknownAuthorityError{}), false},
		{"deadline", fmt.Errorf("%w: %w", context.DeadlineExceeded, &net.AddrError{Err: "invalid port"}), false},
		{"plain", errors.New("boom"), false},
		{"nil", nil, false},
	} {
		if got := clientSide(tt.err); got != tt.want {
			t.Errorf("%s: clientSide(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}
