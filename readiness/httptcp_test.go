package readiness_test

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

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
