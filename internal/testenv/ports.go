package testenv

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
)

// Ports are drawn at random below the Linux ephemeral range (32768+), so a
// port handed out here is not also picked by the kernel for an outgoing
// connection, and parallel test binaries rarely draw the same one. A port is
// checked by binding it; callers retry a start that still loses the race.
const (
	portLow  = 20000
	portHigh = 32000
)

var (
	portsMu   sync.Mutex
	portsUsed = map[int]bool{}
)

// freePort returns a loopback port that was free a moment ago and has not
// been handed out before by this process.
func freePort() (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 200 {
		p := portLow + rand.IntN(portHigh-portLow)
		if portsUsed[p] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		_ = l.Close()
		portsUsed[p] = true
		return p, nil
	}
	return 0, fmt.Errorf("testenv: no free loopback port in %d-%d", portLow, portHigh)
}

// freeAddr returns "127.0.0.1:<free port>".
func freeAddr() (string, error) {
	p, err := freePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), nil
}
