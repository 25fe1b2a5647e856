package readiness

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"

	"google.golang.org/grpc"
)

// This file is how EtcdHealthy reaches one endpoint or member URL: the
// address the etcd client would dial for it, and a dial through the
// client that the check never waits for past its context.

// etcdAddr returns the network and address the etcd client dials for
// endpoint ep, as its endpoint package reads one: "http(s)://host:port",
// "unix(s)://path" or "unix(s):path", or a bare "host:port". network is
// empty for a form it does not know (a custom scheme a dialer given in
// the client's DialOptions may handle): such an endpoint is not judged.
// An error wrapping ErrInvalid means ep can never be dialled: a
// well-formed host and port whose port is out of range or not a number,
// or whose host is neither an IP address nor a DNS name.
func etcdAddr(ep string) (network, addr string, err error) {
	hostport := ep
	switch {
	case strings.HasPrefix(ep, "unix:") || strings.HasPrefix(ep, "unixs:"):
		_, path, _ := strings.Cut(ep, ":")
		path = strings.TrimPrefix(path, "//") // "unix:///abs" is "/abs", "unix://rel" is "rel"
		if path == "" {
			return "", "", fmt.Errorf("%w: etcd endpoint %q: no socket path", ErrInvalid, ep)
		}
		return "unix", path, nil
	case strings.Contains(ep, "://"):
		u, perr := url.Parse(ep)
		if perr != nil || (u.Scheme != "http" && u.Scheme != "https") {
			return "", "", nil
		}
		hostport = u.Host
	}
	host, port, serr := net.SplitHostPort(hostport)
	if serr != nil {
		return "", "", nil
	}
	if err := checkHostPort(host, port, false); err != nil {
		return "", "", fmt.Errorf("%w: etcd endpoint %q can never be dialled: %v", ErrInvalid, ep, err)
	}
	return "tcp", hostport, nil
}

// etcdDial is one dial through the client, which its caller may abandon.
type etcdDial struct {
	ready chan struct{} // closed when done is set

	mu        sync.Mutex
	done      bool
	abandoned bool
	conn      *grpc.ClientConn
	err       error
}

// dial opens a connection to url through the client (c.Dial: its TLS
// configuration, credentials and dial options) and waits for it for at
// most as long as ctx. c.Dial itself is bounded only by the client's
// DialTimeout and Close, not by ctx: when the client was made with
// grpc.WithBlock it blocks until the connection is ready, which for a
// member that accepts connections but does not answer may be never. If
// ctx ends first, the dial is abandoned: its goroutine closes the
// connection whenever c.Dial returns, and until then url is recorded as
// stuck (see stuckDial) so that later checks do not pile dials up on it.
func (e *etcdCheck) dial(ctx context.Context, url string) (*grpc.ClientConn, error) {
	d := &etcdDial{ready: make(chan struct{})}
	go func() {
		var conn *grpc.ClientConn
		err := protect("etcd: the client's Dial of "+url, func() (err error) {
			conn, err = e.c.Dial(url)
			return err
		})
		d.mu.Lock()
		if d.abandoned {
			d.mu.Unlock()
			if conn != nil {
				_ = conn.Close()
			}
			e.unstick(url)
			return
		}
		d.conn, d.err, d.done = conn, err, true
		d.mu.Unlock()
		close(d.ready)
	}()
	select {
	case <-d.ready:
		return d.conn, d.err
	case <-ctx.Done():
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done {
		if d.conn != nil {
			_ = d.conn.Close()
		}
		return nil, ctx.Err()
	}
	d.abandoned = true
	e.stick(url)
	return nil, ctx.Err()
}

func (e *etcdCheck) stick(url string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stuck == nil {
		e.stuck = map[string]int{}
	}
	e.stuck[probeKey(url)]++
}

func (e *etcdCheck) unstick(url string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	k := probeKey(url)
	if e.stuck[k]--; e.stuck[k] <= 0 {
		delete(e.stuck, k)
	}
}

// stuckDial reports whether a dial to url abandoned by an earlier check
// has not returned yet: the client dials with grpc.WithBlock and the
// connection is not ready.
func (e *etcdCheck) stuckDial(url string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stuck[probeKey(url)] > 0
}

// listening finds out, with a plain connection bounded by ctx and closed
// at once, whether anything accepts connections at addr: used instead of
// a second dial through the client while one is stuck. It returns nil if
// something does, an error wrapping ErrUnreachable if nothing does, and
// ctx's error if ctx ended first.
func listening(ctx context.Context, network, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	_ = conn.Close()
	return nil
}
