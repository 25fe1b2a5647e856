package readiness

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// checkHostPort says what is wrong with host and port as the parts of a
// network address (TCPDial's "host:port", an HTTPGet URL's authority), or
// returns nil. host must be an IP address (an IPv6 one with an optional
// zone) or a DNS name; port, when given or required, a number from 1 to
// 65535 or a service name the system knows ("https"). Nothing is looked
// up on the network: a name that does not resolve is a readiness
// failure, not bad input.
func checkHostPort(host, port string, portOptional bool) error {
	if host == "" {
		return fmt.Errorf("no host")
	}
	if !validHost(host) {
		return fmt.Errorf("host %q is neither an IP address nor a DNS name", host)
	}
	if port == "" {
		if portOptional {
			return nil
		}
		return fmt.Errorf("no port")
	}
	if n, err := strconv.Atoi(port); err == nil || allDigits(port) {
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %s is out of range (1-65535)", port)
		}
		return nil
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("port %q is neither a number nor a known service name", port)
	}
	return nil
}

func allDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

// validHost reports whether host is an IP address (IPv6 with an optional
// "%zone") or a DNS name: dot-separated labels of letters, digits, '-' and
// '_', each 1-63 bytes, not starting or ending with '-', 253 bytes at
// most, an optional trailing dot.
func validHost(host string) bool {
	if net.ParseIP(host) != nil {
		return true
	}
	if ip, zone, ok := strings.Cut(host, "%"); ok {
		return zone != "" && strings.Contains(ip, ":") && net.ParseIP(ip) != nil && !strings.ContainsAny(zone, " \t\r\n%")
	}
	name := strings.TrimSuffix(host, ".")
	if name == "" || len(name) > 253 {
		return false
	}
	for label := range strings.SplitSeq(name, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
