package readiness

import (
	"context"
	"fmt"
	"net"
)

// TCPDial returns a check that a TCP connection to address ("host:port")
// can be opened; the connection is closed at once. A failure names the
// address and wraps ErrUnreachable. An address that can never be dialled
// makes every call fail at once with a permanent ErrInvalid error, so
// that Wait returns instead of retrying until its deadline: not
// "host:port", no host, a host that is neither an IP address nor a DNS
// name, a port that is neither a number from 1 to 65535 nor a known
// service name ("127.0.0.1:99999"). TCPDial does not block; the check is
// safe for concurrent use, and each call is bounded by ctx.
func TCPDial(address string) Check {
	t := &tcpCheck{addr: address}
	if host, port, err := net.SplitHostPort(address); err != nil {
		t.bad = invalid("TCPDial: malformed address %q (want host:port)", address)
	} else if err := checkHostPort(host, port, false); err != nil {
		t.bad = invalid("TCPDial: address %q: %v", address, err)
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
