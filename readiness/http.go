package readiness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// MaxBodyBytes is how much of a response body HTTPGet reads and hands to
// its accept function; the rest is discarded unread.
const MaxBodyBytes = 64 << 10

// HTTPGet returns a check that GET rawURL through c succeeds: by default
// any 2xx status; with a non-nil accept, whatever accept returns nil for,
// given the status code and at most MaxBodyBytes of the body. Failures
// name the URL: no HTTP answer wraps ErrUnreachable, 401/403 wrap
// ErrAccessDenied, other statuses quote the start of the body; an error c
// raises from its own configuration before sending anything (a proxy
// address with a port out of range, say) is a permanent ErrInvalid
// error, as no retry can fix it.
//
// A nil client, or a URL that is not absolute http(s) with a valid host
// and port (1-65535), makes every call fail with a permanent ErrInvalid
// error. A panic in accept or in the client's transport is recovered and
// fails the check with a permanent error wrapping ErrPanic. HTTPGet does
// not block; the check is safe for concurrent use if c and accept are,
// and each call is one request bounded by ctx.
func HTTPGet(c *http.Client, rawURL string, accept func(status int, body []byte) error) Check {
	h := &httpCheck{c: c, url: rawURL, accept: accept}
	u, err := url.Parse(rawURL)
	switch {
	case c == nil:
		h.bad = invalid("HTTPGet: nil *http.Client")
	case err != nil:
		h.bad = invalid("HTTPGet: malformed URL %q: %v", rawURL, err)
	case (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		h.bad = invalid("HTTPGet: URL %q is not an absolute http or https URL", rawURL)
	default:
		if err := checkHostPort(u.Hostname(), u.Port(), true); err != nil {
			h.bad = invalid("HTTPGet: URL %q: %v", rawURL, err)
		}
	}
	return h
}

type httpCheck struct {
	c      *http.Client
	url    string
	accept func(int, []byte) error
	bad    error
}

func (h *httpCheck) Name() string { return "GET " + h.url }

func (h *httpCheck) Check(ctx context.Context) error {
	if h.bad != nil {
		return h.bad
	}
	return settle(h.check(ctx))
}

func (h *httpCheck) check(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url, nil)
	if err != nil {
		return Permanent(fmt.Errorf("%s: %w", h.Name(), err))
	}
	var resp *http.Response
	if perr := protect(h.Name()+": the *http.Client's transport", func() error {
		resp, err = h.c.Do(req)
		return nil
	}); perr != nil {
		return perr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", h.Name(), classifyHTTP(err))
	}
	body, readErr := io.ReadAll(io.LimitReader(resp.Body, MaxBodyBytes))
	_ = resp.Body.Close()
	if readErr != nil {
		return fmt.Errorf("%s: HTTP %d, reading the body: %w", h.Name(), resp.StatusCode, readErr)
	}
	if h.accept != nil {
		if err := protect(h.Name()+": the accept function", func() error { return h.accept(resp.StatusCode, body) }); err != nil {
			var pe *panicError
			if errors.As(err, &pe) {
				return err
			}
			return fmt.Errorf("%s: HTTP %d: %w", h.Name(), resp.StatusCode, err)
		}
		return nil
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	if kind := classifyHTTPStatus(resp.StatusCode); kind != nil {
		return fmt.Errorf("%s: HTTP %d: %w", h.Name(), resp.StatusCode, kind)
	}
	return fmt.Errorf("%s: HTTP %d: %s", h.Name(), resp.StatusCode, snippet(body, 200))
}
