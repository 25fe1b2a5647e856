package readiness

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"

	"k8s.io/client-go/rest"
)

// APIServerReady returns a check that a kube-apiserver is ready: GET
// /readyz, with one exclude= parameter per name in exclude (for checks
// the caller knows cannot pass yet, such as
// "poststarthook/start-apiextensions-controllers"), must answer 200.
//
// c is a REST client for the apiserver, for example
// clientset.Discovery().RESTClient() or rest.RESTClientFor(config). The
// failure says which way it failed:
//   - not ready (500 and other statuses): a *ReadyzError naming the
//     failing checks, read from the response or, if it lists none, from
//     GET /readyz?verbose ("kube-apiserver not ready (HTTP 500): [-]etcd,
//     [-]poststarthook/rbac/bootstrap-roles");
//   - 401/403: an error wrapping ErrAccessDenied (a credential or RBAC
//     problem, not readiness);
//   - no HTTP answer (connection refused, TLS failure): an error wrapping
//     ErrUnreachable;
//   - an error the client raises from its own configuration before
//     sending anything, which no retry can fix (a host whose port is out
//     of range, "dial tcp: address 99999: invalid port"; a URL that does
//     not parse): a permanent error wrapping ErrInvalid.
//
// RBAC: get on the non-resource URL /readyz, which the default
// system:public-info-viewer ClusterRole grants to everyone, authenticated
// or not.
//
// A nil client (a typed nil too, such as a nil *rest.RESTClient) or an
// empty or blank exclude name makes every call fail with a permanent
// ErrInvalid error naming the argument. A panic in the client is
// recovered and fails the check with a permanent error wrapping
// ErrPanic. APIServerReady does not block; the
// check is safe for concurrent use and makes one or two requests per
// call, bounded by ctx.
func APIServerReady(c rest.Interface, exclude ...string) Check {
	a := &apiserverCheck{c: c, exclude: append([]string(nil), exclude...)}
	if isNil(c) {
		a.bad = nilArg("APIServerReady", "rest.Interface", c)
	}
	for _, name := range exclude {
		if strings.TrimSpace(name) == "" || strings.ContainsFunc(name, unicode.IsSpace) {
			a.bad = invalid("APIServerReady: bad excluded check name %q", name)
		}
	}
	return a
}

type apiserverCheck struct {
	c       rest.Interface
	exclude []string
	bad     error
}

func (a *apiserverCheck) Name() string { return "kube-apiserver" }

// ReadyzError is a kube-apiserver's answer that it is not ready.
type ReadyzError struct {
	// StatusCode is the HTTP status of GET /readyz.
	StatusCode int
	// Failing names the failing checks, e.g. "etcd",
	// "poststarthook/rbac/bootstrap-roles"; empty if the server did not
	// list them.
	Failing []string
	// Body is the start of the response, when no failing check was
	// listed.
	Body string
}

func (e *ReadyzError) Error() string {
	if len(e.Failing) > 0 {
		return fmt.Sprintf("kube-apiserver not ready (HTTP %d): [-]%s", e.StatusCode, strings.Join(e.Failing, ", [-]"))
	}
	if e.Body != "" {
		return fmt.Sprintf("kube-apiserver not ready (HTTP %d): %s", e.StatusCode, e.Body)
	}
	return fmt.Sprintf("kube-apiserver not ready (HTTP %d)", e.StatusCode)
}

func (a *apiserverCheck) Check(ctx context.Context) error {
	if a.bad != nil {
		return a.bad
	}
	return settle(protect("kube-apiserver: the rest.Interface", func() error { return a.check(ctx) }))
}

func (a *apiserverCheck) check(ctx context.Context) error {
	body, code, err := a.get(ctx, false)
	switch {
	case code == http.StatusOK && err == nil:
		return nil
	case code == 0:
		if err == nil {
			err = fmt.Errorf("no response")
		}
		return fmt.Errorf("kube-apiserver /readyz: %w", classifyHTTP(err))
	case classifyHTTPStatus(code) == ErrAccessDenied:
		return fmt.Errorf("kube-apiserver /readyz: HTTP %d: %w (needs get on the non-resource URL /readyz, granted by system:public-info-viewer): %v",
			code, ErrAccessDenied, err)
	}
	failing := failingChecks(body)
	if len(failing) == 0 {
		if vbody, vcode, _ := a.get(ctx, true); vcode != 0 && vcode != http.StatusOK {
			failing = failingChecks(vbody)
		}
	}
	re := &ReadyzError{StatusCode: code, Failing: failing}
	if len(failing) == 0 {
		re.Body = snippet(body, 200)
	}
	return re
}

// get fetches /readyz (verbose if asked) and returns the body, the HTTP
// status (0 if there was no response) and the client's error.
func (a *apiserverCheck) get(ctx context.Context, verbose bool) ([]byte, int, error) {
	req := a.c.Get()
	if req == nil {
		return nil, 0, fmt.Errorf("the rest.Interface returned a nil *rest.Request")
	}
	req = req.AbsPath("/readyz")
	for _, name := range a.exclude {
		req = req.Param("exclude", name)
	}
	if verbose {
		req = req.Param("verbose", "")
	}
	var code int
	body, err := req.Do(ctx).StatusCode(&code).Raw()
	return body, code, err
}

// Bounds on what failingChecks takes from a body, so that a broken or
// hostile answer cannot make an error message of any size.
const (
	maxFailingChecks = 64
	maxCheckNameLen  = 256
)

// failingChecks parses healthz-style output (GET /readyz?verbose): one
// line per check, "[+]name ok" or "[-]name failed: reason withheld", and
// returns the failing names, in order, at most maxFailingChecks of them.
// A name is what follows "[-]" up to the first space; a name that is
// empty, longer than maxCheckNameLen, not valid UTF-8 or not printable is
// skipped. Lines may be of any length.
func failingChecks(body []byte) []string {
	var names []string
	for line := range bytes.Lines(body) {
		rest, ok := bytes.CutPrefix(bytes.TrimSpace(line), []byte("[-]"))
		if !ok {
			continue
		}
		if i := bytes.IndexFunc(rest, unicode.IsSpace); i >= 0 {
			rest = rest[:i]
		}
		if len(rest) == 0 || len(rest) > maxCheckNameLen || !utf8.Valid(rest) || bytes.ContainsFunc(rest, func(r rune) bool { return !unicode.IsPrint(r) }) {
			continue
		}
		names = append(names, string(rest))
		if len(names) == maxFailingChecks {
			break
		}
	}
	return names
}

// snippet returns the first line of b, at most n bytes of it, cut at a
// character boundary, with invalid UTF-8 and control characters replaced
// by U+FFFD, so that it can go into a one-line error message.
func snippet(b []byte, n int) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	// Replace invalid bytes and control characters first, so the cut below
	// bounds what is returned (a replacement character is 3 bytes).
	s = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || unicode.IsControl(r) {
			return utf8.RuneError
		}
		return r
	}, strings.ToValidUTF8(strings.TrimSpace(s), string(utf8.RuneError)))
	if len(s) > n {
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		return s[:n] + "…"
	}
	return s
}
