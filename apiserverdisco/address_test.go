package apiserverdisco

import (
	"errors"
	"testing"
)

func TestNormalizeAddress(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "" means invalid
	}{
		{"10.0.0.1:6443", "10.0.0.1:6443"},
		{"10.0.0.1:06443", "10.0.0.1:6443"},
		{"[2001:DB8::0:1]:6443", "[2001:db8::1]:6443"},
		{"[::ffff:10.0.0.1]:443", "[::ffff:10.0.0.1]:443"},
		{"[fe80::1%eth0]:6443", "[fe80::1%eth0]:6443"},
		{"API.Example.com:443", "api.example.com:443"},
		{"localhost:1", "localhost:1"},
		{"host-1:65535", "host-1:65535"},
		{"", ""},
		{"10.0.0.1", ""},
		{"10.0.0.1:", ""},
		{"10.0.0.1:0", ""},
		{"10.0.0.1:65536", ""},
		{"10.0.0.1:-1", ""},
		{"10.0.0.1:+80", ""},
		{"10.0.0.1:https", ""},
		{"2001:db8::1:6443", ""},
		{"[10.0.0.1]:6443", ""},
		{"[example.com]:6443", ""},
		{":6443", ""},
		{"10.0.0.256:6443", ""},
		{"-bad.example:6443", ""},
		{"bad_name:6443", ""},
		{"a b:6443", ""},
		{"http://10.0.0.1:6443", ""},
	} {
		got, err := normalizeAddress(tc.in)
		if tc.want == "" {
			if err == nil || !errors.Is(err, ErrInvalidAddress) {
				t.Errorf("normalizeAddress(%q) = %q, %v; want an ErrInvalidAddress", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("normalizeAddress(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestValidateID(t *testing.T) {
	for id, ok := range map[string]bool{
		"node-1":                  true,
		"cp1.example":             true,
		"":                        false,
		"a/b":                     false,
		"a b":                     false,
		"a\nb":                    false,
		"\xff":                    false,
		string(make([]byte, 254)): false,
	} {
		err := validateID(id)
		if ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalidID)) {
			t.Errorf("validateID(%q) = %v, want ok=%v", id, err, ok)
		}
	}
}

func TestRecordRoundTrip(t *testing.T) {
	v := encodeRecord("[2001:db8::1]:6443")
	if v != `{"version":1,"address":"[2001:db8::1]:6443"}` {
		t.Fatalf("encodeRecord = %s", v)
	}
	for in, want := range map[string]string{
		v:                             "[2001:db8::1]:6443",
		`{"address":"10.0.0.1:6443"}`: "10.0.0.1:6443", // no version: read as 1
		`{"version":2,"address":"10.0.0.1:6443","zone":"a"}`: "10.0.0.1:6443", // later versions add fields
		`{"version":1}`: "",
		`{"version":-1,"address":"10.0.0.1:6443"}`: "",
		`{"version":1,"address":"10.0.0.1"}`:       "",
		`["10.0.0.1:6443"]`:                        "",
		`garbage`:                                  "",
		``:                                         "",
	} {
		got, err := decodeRecord([]byte(in))
		if (want == "") != (err != nil) || got != want {
			t.Errorf("decodeRecord(%s) = %q, %v; want %q", in, got, err, want)
		}
	}
}
