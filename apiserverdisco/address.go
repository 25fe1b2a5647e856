package apiserverdisco

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// normalizeAddress validates "host:port" and returns its canonical form:
// IP addresses in netip's canonical text (IPv6 in brackets, lower case,
// compressed), host names in lower case, the port without leading zeros.
// Two spellings of one address normalize to the same string, so sets
// de-duplicate correctly.
func normalizeAddress(s string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalidAddress)
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("%w %q: want host:port with IPv6 in brackets: %v", ErrInvalidAddress, s, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return "", fmt.Errorf("%w %q: port %q is not in 1-65535", ErrInvalidAddress, s, port)
	}
	ps := strconv.FormatUint(p, 10)
	bracketed := strings.HasPrefix(s, "[")
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Is4() && bracketed {
			return "", fmt.Errorf("%w %q: an IPv4 address must not be in brackets", ErrInvalidAddress, s)
		}
		return net.JoinHostPort(ip.String(), ps), nil
	}
	if bracketed {
		return "", fmt.Errorf("%w %q: %q in brackets is not an IPv6 address", ErrInvalidAddress, s, host)
	}
	if err := validHostname(host); err != nil {
		return "", fmt.Errorf("%w %q: %v", ErrInvalidAddress, s, err)
	}
	return net.JoinHostPort(strings.ToLower(host), ps), nil
}

// validHostname accepts RFC 1123 host names whose last label is not all
// digits (so "10.0.0.256" is rejected instead of being taken for a name).
func validHostname(h string) error {
	if h == "" {
		return errors.New("empty host")
	}
	if len(h) > 253 {
		return fmt.Errorf("host name is %d bytes long, the limit is 253", len(h))
	}
	labels := strings.Split(h, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return fmt.Errorf("host %q: label %q must be 1-63 characters", h, l)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("host %q: label %q must not start or end with '-'", h, l)
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("host %q is neither an IP address nor a host name (character %q)", h, c)
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return fmt.Errorf("host %q is neither an IP address nor a host name (all-numeric last label)", h)
	}
	return nil
}

// validateID checks a server ID: the last element of its etcd key.
func validateID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: empty", ErrInvalidID)
	case len(id) > 253:
		return fmt.Errorf("%w %q: %d bytes long, the limit is 253", ErrInvalidID, id, len(id))
	case !utf8.ValidString(id):
		return fmt.Errorf("%w %q: not valid UTF-8", ErrInvalidID, id)
	case strings.Contains(id, "/"):
		return fmt.Errorf("%w %q: contains '/'", ErrInvalidID, id)
	case strings.IndexFunc(id, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return fmt.Errorf("%w %q: contains whitespace or control characters", ErrInvalidID, id)
	}
	return nil
}

// recordVersion is the version of the value document this package writes.
const recordVersion = 1

// record is the value stored under each server's key. Readers use Address
// from any version; later versions may add fields but keep Address.
type record struct {
	Version int    `json:"version"`
	Address string `json:"address"`
}

func encodeRecord(addr string) string {
	b, _ := json.Marshal(record{Version: recordVersion, Address: addr}) // cannot fail: two plain fields
	return string(b)
}

// decodeRecord parses a value and returns its normalized address.
func decodeRecord(v []byte) (string, error) {
	var r record
	if err := json.Unmarshal(v, &r); err != nil {
		return "", fmt.Errorf("not a JSON address record: %w", err)
	}
	if r.Version < 0 {
		return "", fmt.Errorf("record version %d is negative", r.Version)
	}
	if r.Address == "" {
		return "", fmt.Errorf("%w: the record has no \"address\" field", ErrInvalidAddress)
	}
	return normalizeAddress(r.Address)
}
