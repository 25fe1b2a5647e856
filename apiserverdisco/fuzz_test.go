package apiserverdisco

import (
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// checkAddress fails unless a is a canonical, valid "host:port".
func checkAddress(t *testing.T, a string) {
	t.Helper()
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		t.Fatalf("accepted %q, which is not host:port: %v", a, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 || strconv.Itoa(p) != port {
		t.Fatalf("accepted %q with port %q", a, port)
	}
	if host == "" {
		t.Fatalf("accepted %q with an empty host", a)
	}
	if n, err := normalizeAddress(a); err != nil || n != a {
		t.Fatalf("accepted %q, which is not canonical: normalizeAddress gives %q, %v", a, n, err)
	}
}

// FuzzLegacyValue feeds arbitrary bytes to the decoder of the k3s/RKE2
// "<program>/apiaddresses" value. It must never panic; every address it
// accepts is a canonical host:port; it reports one error for the value,
// counting every bad entry; and what it accepts round-trips through the
// encoding k3s uses (and the LegacyKeyWriter writes).
func FuzzLegacyValue(f *testing.F) {
	for _, seed := range []string{
		"[\"10.0.0.1:6443\",\"10.0.0.2:6443\"]\n", // k3s: json.NewEncoder(...).Encode
		`["10.0.0.1:6443","10.0.0.2:6443"]`,       // RKE2's older json.Marshal
		`["[2001:db8::1]:6443","cp-1.example:6443"]`,
		"[]\n",
		"null",
		"",
		" \n",
		`["10.0.0.1:6443","not an address","[10.0.0.2]:6443",""]`,
		`["10.0.0.1"]`,
		`["10.0.0.1:0","10.0.0.1:65536","2001:db8::1:6443"]`,
		`[1,2]`,
		`{"a":1}`,
		`"10.0.0.1:6443"`,
		"\x00\xff",
		`["\u0000:1"]`,
		`["[fe80::1%eth0]:6443"]`,
	} {
		f.Add([]byte(seed))
	}
	const key = "k3s/apiaddresses"
	f.Fuzz(func(t *testing.T, v []byte) {
		addrs, bad, notYet := decodeLegacy(key, v)
		if (len(addrs) == 0) != (notYet != "") {
			t.Fatalf("decodeLegacy(%q): %d addresses but not-yet-set reason %q", v, len(addrs), notYet)
		}
		for _, a := range addrs {
			checkAddress(t, a)
		}
		if bad != nil {
			if bad.Key != key || !strings.Contains(bad.Error(), key) {
				t.Fatalf("the error does not name the key: %v", bad)
			}
			if bad.Count < 0 || len(bad.Entries) > MaxReportedEntries || len(bad.Entries) > max(bad.Count, 0) ||
				(bad.Count > 0) != (len(bad.Entries) > 0) {
				t.Fatalf("inconsistent error: Count %d, %d entries", bad.Count, len(bad.Entries))
			}
			if bad.Count > 0 && !errors.Is(bad, ErrInvalidAddress) {
				t.Fatalf("bad entries without ErrInvalidAddress: %v", bad)
			}
		}
		if len(addrs) == 0 {
			return
		}
		// What was accepted, written the way k3s writes it, reads back the
		// same and clean.
		enc := encodeLegacy(addrs)
		if !strings.HasSuffix(string(enc), "]\n") {
			t.Fatalf("encodeLegacy(%q) = %q: want a JSON array and a newline", addrs, enc)
		}
		again, bad2, notYet2 := decodeLegacy(key, enc)
		if bad2 != nil || notYet2 != "" || !slices.Equal(again, addrs) {
			t.Fatalf("round trip of %q through %q: %q, %v, %q", addrs, enc, again, bad2, notYet2)
		}
	})
}

// FuzzPublishedValue feeds arbitrary bytes to the decoder of the versioned
// JSON value Publish writes. It must never panic; an accepted value yields
// a canonical host:port, which encodes and decodes back to itself.
func FuzzPublishedValue(f *testing.F) {
	for _, seed := range []string{
		`{"version":1,"address":"10.0.0.1:6443"}`,
		`{"version":1,"address":"[2001:db8::1]:6443"}`,
		`{"address":"API.Example.com:443"}`,
		`{"version":2,"address":"10.0.0.1:6443","zone":"a"}`,
		`{"version":-1,"address":"10.0.0.1:6443"}`,
		`{"version":1}`,
		`{"version":1,"address":"10.0.0.1"}`,
		`{"version":1,"address":"[10.0.0.1]:6443"}`,
		`{"version":1e100,"address":"10.0.0.1:6443"}`,
		`["10.0.0.1:6443"]`,
		`null`,
		``,
		"\x00\xffgarbage",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		addr, err := decodeRecord(v)
		if err != nil {
			if addr != "" {
				t.Fatalf("decodeRecord(%q) = %q with error %v", v, addr, err)
			}
			return
		}
		checkAddress(t, addr)
		again, err := decodeRecord([]byte(encodeRecord(addr)))
		if err != nil || again != addr {
			t.Fatalf("round trip of %q: %q, %v", addr, again, err)
		}
	})
}
