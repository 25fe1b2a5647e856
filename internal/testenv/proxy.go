package testenv

import (
	"fmt"
	"net"
	"sync"
	"time"
)

// Proxy is a TCP proxy on 127.0.0.1 in front of one address, pass-through by
// default and switchable at run time. Point an etcd client at Addr to make
// "the RPC succeeded but the reply was lost" happen for real. Its methods are
// safe for concurrent use.
type Proxy struct {
	target string
	ln     net.Listener

	mu          sync.Mutex
	dropReplies bool
	blackhole   bool
	delay       time.Duration
	conns       map[net.Conn]struct{}
	closed      bool
	wg          sync.WaitGroup
}

// NewProxy starts a proxy on a free loopback port forwarding to target
// ("host:port").
func NewProxy(target string) (*Proxy, error) {
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("testenv: proxy target %q: %w", target, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("testenv: proxy listen: %w", err)
	}
	p := &Proxy{target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr returns the proxy's "127.0.0.1:port".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// DropReplies discards (true) or passes (false) everything the target sends
// back; requests still reach the target.
func (p *Proxy) DropReplies(on bool) { p.set(func() { p.dropReplies = on }) }

// Blackhole discards traffic in both directions while on; connections stay
// open, so peers see silence rather than an error.
func (p *Proxy) Blackhole(on bool) { p.set(func() { p.blackhole = on }) }

// Delay holds every chunk of reply traffic for d before forwarding it.
func (p *Proxy) Delay(d time.Duration) { p.set(func() { p.delay = d }) }

// Pass restores plain pass-through. Dropping discards bytes mid-stream, so
// a connection that lost bytes is corrupt (an HTTP/2 stream cannot recover):
// call ResetAll after Pass to make clients reconnect.
func (p *Proxy) Pass() {
	p.set(func() { p.dropReplies, p.blackhole, p.delay = false, false, 0 })
}

// ResetAll cuts every open connection (new ones are still accepted).
func (p *Proxy) ResetAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
	}
}

// Close stops accepting, cuts every connection and waits for the proxy's
// goroutines to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	err := p.ln.Close()
	p.ResetAll()
	p.wg.Wait()
	return err
}

func (p *Proxy) set(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f()
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			_ = down.Close()
			continue
		}
		if !p.track(down) || !p.track(up) {
			_ = down.Close()
			_ = up.Close()
			return
		}
		p.wg.Add(2)
		go p.pipe(up, down, false)
		go p.pipe(down, up, true)
	}
}

// pipe copies src to dst chunk by chunk, consulting the current mode for
// each chunk; reply is true for the target-to-client direction.
func (p *Proxy) pipe(dst, src net.Conn, reply bool) {
	defer p.wg.Done()
	defer p.untrack(dst)
	defer p.untrack(src)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			drop := p.blackhole || (reply && p.dropReplies)
			delay := p.delay
			p.mu.Unlock()
			if reply && delay > 0 {
				time.Sleep(delay)
			}
			if !drop {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}
