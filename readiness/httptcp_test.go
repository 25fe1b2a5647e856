package readiness_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kubeboot/kubeboot/readiness"
)

func TestHTTPGet(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			_, _ = w.Write([]byte("ok"))
		case "/starting":
			http.Error(w, "still loading plugins", http.StatusServiceUnavailable)
		case "/secret":
			http.Error(w, "who are you", http.StatusUnauthorized)
		case "/big":
			_, _ = w.Write([]byte(strings.Repeat("x", 3*readiness.MaxBodyBytes)))
		}
	}))
	defer srv.Close()
	ctx := testCtx(t)
	c := srv.Client()

	require.NoError(t, readiness.HTTPGet(c, srv.URL+"/ok", nil).Check(ctx))

	err := readiness.HTTPGet(c, srv.URL+"/starting", nil).Check(ctx)
	require.EqualError(t, err, fmt.Sprintf("GET %s/starting: HTTP 503: still loading plugins", srv.URL))

	err = readiness.HTTPGet(c, srv.URL+"/secret", nil).Check(ctx)
	require.ErrorIs(t, err, readiness.ErrAccessDenied)

	// The accept function decides, and sees at most MaxBodyBytes.
	var seen int
	accept := func(status int, body []byte) error {
		seen = len(body)
		if status == http.StatusServiceUnavailable {
			return nil // "starting" is good enough here
		}
		return errors.New("unexpected")
	}
	require.NoError(t, readiness.HTTPGet(c, srv.URL+"/starting", accept).Check(ctx))
	err = readiness.HTTPGet(c, srv.URL+"/big", accept).Check(ctx)
	require.EqualError(t, err, fmt.Sprintf("GET %s/big: HTTP 200: unexpected", srv.URL))
	assert.Equal(t, readiness.MaxBodyBytes, seen)

	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	err = readiness.HTTPGet(c, dead.URL+"/ok", nil).Check(ctx)
	require.ErrorIs(t, err, readiness.ErrUnreachable)

	for name, check := range map[string]readiness.Check{
		"nil client":   readiness.HTTPGet(nil, srv.URL, nil),
		"malformed":    readiness.HTTPGet(c, "http://[::1", nil),
		"relative":     readiness.HTTPGet(c, "/healthz", nil),
		"other scheme": readiness.HTTPGet(c, "ftp://example.com/", nil),
	} {
		require.ErrorIs(t, readiness.Wait(ctx, check), readiness.ErrInvalid, name)
	}
}

func TestTCPDial(t *testing.T) {
	ctx := testCtx(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, readiness.TCPDial(addr).Check(ctx))
	require.NoError(t, ln.Close())

	err = readiness.TCPDial(addr).Check(ctx)
	require.ErrorIs(t, err, readiness.ErrUnreachable)
	assert.Contains(t, err.Error(), "TCP "+addr)

	for _, bad := range []string{"", "127.0.0.1", ":6443", "host:"} {
		require.ErrorIs(t, readiness.Wait(ctx, readiness.TCPDial(bad)), readiness.ErrInvalid, "%q", bad)
	}
}

// An address or URL that can never be dialled is bad input: Wait returns
// ErrInvalid after one attempt instead of retrying "unreachable" until its
// deadline (the context here ends only at the test's guard).
func TestInvalidAddressIsPermanent(t *testing.T) {
	ctx := testCtx(t)
	c := http.DefaultClient
	tests := []struct {
		name  string
		check readiness.Check
		want  string
	}{
		{"port out of range", readiness.TCPDial("127.0.0.1:99999"), "port 99999 is out of range (1-65535)"},
		{"port zero", readiness.TCPDial("127.0.0.1:0"), "port 0 is out of range"},
		{"huge port", readiness.TCPDial("127.0.0.1:99999999999999999999"), "out of range"},
		{"unknown service", readiness.TCPDial("127.0.0.1:no-such-service"), "neither a number nor a known service name"},
		{"no host", readiness.TCPDial(":6443"), "no host"},
		{"no port", readiness.TCPDial("host:"), "no port"},
		{"garbage host", readiness.TCPDial("ho st:6443"), "neither an IP address nor a DNS name"},
		{"garbage", readiness.TCPDial("::::"), "malformed address"},
		{"IPv6 unbracketed", readiness.TCPDial("::1:6443"), "malformed address"},
		{"URL port out of range", readiness.HTTPGet(c, "http://127.0.0.1:99999/readyz", nil), "port 99999 is out of range"},
		{"URL port zero", readiness.HTTPGet(c, "https://127.0.0.1:0/", nil), "port 0 is out of range"},
		{"URL no host", readiness.HTTPGet(c, "http://:8080/", nil), "no host"},
		{"URL garbage host", readiness.HTTPGet(c, "http://ho$t/", nil), "neither an IP address nor a DNS name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opt, attempts := observer()
			err := readiness.Wait(ctx, tt.check, opt)
			require.ErrorIs(t, err, readiness.ErrInvalid)
			assert.NotErrorIs(t, err, readiness.ErrUnreachable)
			assert.Contains(t, err.Error(), tt.want)
			assert.Len(t, attempts, 1)
		})
	}
	// Valid forms stay valid (these fail as unreachable, not as input).
	for _, addr := range []string{"127.0.0.1:1", "[::1]:1", "localhost:1", "localhost:https", "[fe80::1%lo]:1", "my_host.example.:1"} {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := readiness.TCPDial(addr).Check(sctx)
		cancel()
		assert.NotErrorIs(t, err, readiness.ErrInvalid, "%q: %v", addr, err)
	}
	for _, u := range []string{"http://127.0.0.1:1/", "https://[::1]:1/x", "http://localhost/", "http://[fe80::1%25lo]:1/"} {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := readiness.HTTPGet(c, u, nil).Check(sctx)
		cancel()
		assert.NotErrorIs(t, err, readiness.ErrInvalid, "%q: %v", u, err)
	}
}
