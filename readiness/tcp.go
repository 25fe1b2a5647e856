package readiness

import (
	"context"
	"fmt"
	"net"
)

// TCPDial returns a check that a TCP connection to address ("host:port")
// can be opened; the connection is closed at once. A failure names the
// address and wraps ErrUnreachable. A malformed address makes every call
// fail with a permanent ErrInvalid error. TCPDial does not block; the
// check is safe for concurrent use, and each call is bounded by ctx.
func TCPDial(address string) Check {
	t := &tcpCheck{addr: address}
	if host, port, err := net.SplitHostPort(address); err != nil || port == "" {
		t.bad = invalid("TCPDial: malformed address %q (want host:port)", address)
	} else if host == "" {
		t.bad = invalid("TCPDial: address %q has no host", address)
	}
	return t
}

type tcpCheck struct {
	addr string
	bad  error
}

func (t *tcpCheck) Name() string { return "TCP " + t.addr }

func (t *tcpCheck) Check(ctx context.Context) error {
	if t.bad != nil {
		return t.bad
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", t.Name(), err)
		}
		return fmt.Errorf("%s: %w: %w", t.Name(), ErrUnreachable, err)
	}
	_ = conn.Close()
	return nil
}
