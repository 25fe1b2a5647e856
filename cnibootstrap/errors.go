package cnibootstrap

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Sentinel errors. Callers branch on them with errors.Is; the errors that
// wrap them name the request or the input concerned.
var (
	// ErrUnauthorized: the apiserver answered one of the waiter's own
	// requests with 401 Unauthorized, so the credentials in Clients are
	// bad (expired, revoked, wrong cluster). Wait and Check return it at
	// once instead of waiting: no prerequisite can fix it. The error that
	// wraps it names the request and also wraps the apiserver's error.
	ErrUnauthorized = errors.New("unauthorized: the apiserver rejected the waiter's credentials")

	// ErrInvalidInput: New, Wait, Check or NewClients was given nil
	// clients or a nil context, a nil or malformed requirement, an empty
	// or malformed name, a zero or malformed GroupVersionResource or a
	// malformed rule; or (from Wait and Check, at once) one of the
	// waiter's requests could not be sent at all because the clients'
	// address is one the client library rejects before sending (an
	// invalid port, a scheme other than http or https). The error says
	// which.
	ErrInvalidInput = errors.New("invalid input")

	// ErrFailed is wrapped by every *FailedError: a requirement can never
	// hold any more (a Job that failed, a Deployment past its progress
	// deadline, an object kstatus calls Failed), so Wait returns at once
	// instead of at its deadline. Each requirement's doc says which of its
	// failures are final.
	ErrFailed = errors.New("requirement failed for good")

	// ErrCallbackPanicked is wrapped by every *PanicError: code the caller
	// supplied (a Condition, the WithProgress function, the backoff
	// factory or policy, the logger's sink, a client) panicked, and the
	// package recovered.
	ErrCallbackPanicked = errors.New("callback panicked")
)

// ForbiddenError says that one of the waiter's own requests was answered
// with 403 Forbidden: the waiter lacks the permission it names. It is not
// returned by itself: it is the Err of the Unmet entry of every requirement
// the request serves, so errors.As finds it in an *UnmetError. The waiter
// keeps retrying on its backoff floor, since the missing rule may be
// granted later (it is often part of the same bootstrap).
type ForbiddenError struct {
	// Verb is the request's verb: list, watch, create or get.
	Verb string
	// Group and Resource name the resource ("" for the core group); for a
	// non-resource request (discovery) Resource is empty and URL is set.
	Group, Resource string
	// Namespace is the request's namespace, "" when cluster-wide.
	Namespace string
	// Name is set when the request was narrowed to one object with a
	// metadata.name field selector, so a rule with resourceNames would
	// grant it.
	Name string
	// Selector is the label selector of a request narrowed by labels
	// (pods of a workload, EndpointSlices of a Service); resourceNames
	// cannot narrow a rule for it.
	Selector string
	// URL is the path of a non-resource request, such as
	// "/apis/crd.projectcalico.org/v1".
	URL string
	// Err is the apiserver's error.
	Err error
}

func (e *ForbiddenError) Error() string {
	if e == nil {
		return "<nil>"
	}
	return "the waiter may not " + e.request().String()
}

// Unwrap returns the apiserver's error.
func (e *ForbiddenError) Unwrap() error {
	if e == nil {
		return nil
	}
	return e.Err
}

func (e *ForbiddenError) request() request {
	return request{verb: e.Verb, gvr: schema.GroupVersionResource{Group: e.Group, Resource: e.Resource},
		namespace: e.Namespace, name: e.Name, selector: e.Selector, url: e.URL}
}

// FailedError says that a requirement can never hold any more: the
// object it names failed for good. Wait returns it at once (as the Err
// of its *UnmetError, which also lists what else was unmet), and Check
// reports it as the Err of the requirement's Unmet entry; errors.As
// finds it through either, and errors.Is(err, ErrFailed) is true. Which
// failures are final is said by each requirement's doc: a Job with the
// Failed (or FailureTarget) condition or past JobComplete.FailAfter
// failures, a Deployment whose Progressing condition says
// ProgressDeadlineExceeded, an object kstatus computes as Failed.
type FailedError struct {
	// Requirement is the Name of the requirement that failed.
	Requirement string
	// Kind, Namespace and Name name the object that failed, for example
	// "Job", "kube-system", "helm-install-rke2-ingress-nginx".
	Kind, Namespace, Name string
	// Reason is a one-word cause: the condition's reason
	// ("BackoffLimitExceeded", "ProgressDeadlineExceeded"), "FailAfter"
	// for JobComplete.FailAfter, or "Failed" from kstatus.
	Reason string
	// Message says more: the condition's message, the failures counted
	// and the last container's exit, or kstatus's message.
	Message string
}

func (e *FailedError) Error() string {
	if e == nil {
		return "<nil>"
	}
	obj := e.Name
	if e.Namespace != "" {
		obj = e.Namespace + "/" + e.Name
	}
	s := e.Kind + " " + obj + " failed: " + e.Reason
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Unwrap returns ErrFailed.
func (e *FailedError) Unwrap() error { return ErrFailed }

// failure returns the first *FailedError among the Errs of unmet.
func failure(unmet []Unmet) *FailedError {
	for _, u := range unmet {
		var fe *FailedError
		if errors.As(u.Err, &fe) {
			return fe
		}
	}
	return nil
}

// Unmet is one requirement that does not hold, and why.
type Unmet struct {
	// Requirement is the requirement's Name.
	Requirement string
	// Reason says why it does not hold, for example "not found" or
	// "Established=False (Installing)".
	Reason string
	// Err is the error behind Reason when there is one: a
	// *ForbiddenError when the waiter may not read what it needs, or the
	// error of a failed request. It is nil when the requirement is simply
	// not true yet.
	Err error

	line string // set when the report line is not "Requirement: Reason"
}

// String is the report line, for example
// "clusterrole calico-typha: not found" or
// "system:serviceaccount:kube-system:calico-typha cannot list clusterinformations.crd.projectcalico.org".
func (u Unmet) String() string {
	if u.line != "" {
		return u.line
	}
	return u.Requirement + ": " + u.Reason
}

// UnmetError is the error of Wait when its context ends before every
// requirement holds or a requirement fails for good, and of Check when
// some do not hold. Unmet lists every requirement that did not hold at
// that moment, in the order they were given to New; errors.As(err,
// &unmetErr) gives it to the caller.
//
// Unwrap returns Err (when set) and the Err of every Unmet entry, so
// errors.Is(err, context.DeadlineExceeded) and errors.As(err, &forbidden)
// see through it.
type UnmetError struct {
	// Unmet is every requirement not met, in the order given to New.
	Unmet []Unmet
	// Total is the number of requirements.
	Total int
	// Err is why Wait stopped: its context's error, wrapping the
	// context's cause when there is one, or the *FailedError of the
	// requirement that failed for good. It is nil for Check.
	Err error
}

func (e *UnmetError) Error() string {
	if e == nil {
		return "<nil>"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "cnibootstrap: %d of %d requirements not met", len(e.Unmet), e.Total)
	if e.Err != nil {
		fmt.Fprintf(&b, " (%v)", e.Err)
	}
	for i, u := range e.Unmet {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(u.String())
	}
	return b.String()
}

// Unwrap returns Err (when set) followed by the Err of every Unmet entry
// that has one.
func (e *UnmetError) Unwrap() []error {
	if e == nil {
		return nil
	}
	var errs []error
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	for _, u := range e.Unmet {
		if u.Err != nil {
			errs = append(errs, u.Err)
		}
	}
	return errs
}

// request describes one of the waiter's own requests, for errors and logs.
type request struct {
	verb      string
	gvr       schema.GroupVersionResource
	namespace string
	name      string // the metadata.name field selector, if any
	selector  string // the label selector, if any
	url       string // a non-resource request
}

func (r request) String() string {
	if r.url != "" {
		return r.verb + " " + r.url
	}
	s := r.verb + " " + r.gvr.GroupResource().String()
	if r.name != "" {
		s += " named " + r.name
	}
	if r.selector != "" {
		s += " with labels " + r.selector
	}
	if r.namespace != "" {
		s += " in namespace " + r.namespace
	}
	return s
}

// classify turns the error of one of the waiter's own requests into what
// the rest of the package acts on; it is the one place that looks at the
// apiserver's status codes (the predicates below only read its verdict):
//   - an error the client library raised before sending anything, which
//     no retry can fix (notSent): an error wrapping ErrInvalidInput (and
//     the library's error); fatal (isFatal).
//   - 401: an error wrapping ErrUnauthorized (and the apiserver's error);
//     fatal (isFatal).
//   - 403: a *ForbiddenError naming the permission the request needed.
//   - 404: the error, wrapped with the request and marked not found
//     (isNotFound).
//   - 410 Gone or an expired resourceVersion: the error, wrapped with the
//     request and marked expired (isExpired): relist (see expiry for
//     when at once).
//   - anything else: the error, wrapped with the request.
//
// apierrors.IsNotFound and friends still see the apiserver's error through
// the wrapping.
func classify(err error, r request) error {
	switch {
	case err == nil:
		return nil
	case notSent(err):
		return &classifiedError{kind: statusNotSent,
			err: fmt.Errorf("cnibootstrap: %s: %w: the request cannot be sent, check the address in the clients' configuration: %w", r, ErrInvalidInput, err)}
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("cnibootstrap: %s: %w (%w)", r, ErrUnauthorized, err)
	case apierrors.IsForbidden(err):
		return &ForbiddenError{Verb: r.verb, Group: r.gvr.Group, Resource: r.gvr.Resource,
			Namespace: r.namespace, Name: r.name, Selector: r.selector, URL: r.url, Err: err}
	case apierrors.IsNotFound(err):
		return &classifiedError{kind: statusNotFound, err: fmt.Errorf("%s: %w", r, err)}
	case apierrors.IsGone(err) || apierrors.IsResourceExpired(err):
		return &classifiedError{kind: statusExpired, err: fmt.Errorf("%s: %w", r, err)}
	default:
		return fmt.Errorf("%s: %w", r, err)
	}
}

// statusKind is classify's verdict on a status code the callers branch on.
type statusKind int

const (
	statusNotFound statusKind = iota + 1
	statusExpired
	statusNotSent
)

// localAddrErrors are the *net.AddrError messages of an address the
// dialer rejects before sending anything: no retry can fix them. Others
// ("no suitable address found") depend on name resolution, which may
// change.
var localAddrErrors = []string{
	"invalid port", "missing port in address", "too many colons in address",
	"missing ']' in address", "unexpected '[' in address", "unexpected ']' in address",
}

// notSent reports whether err was raised by the client library before
// anything was sent, for a reason no retry can fix: an address the dialer
// cannot parse (a port outside 1-65535, say) or a URL scheme net/http
// does not speak.
func notSent(err error) bool {
	var ae *net.AddrError
	if errors.As(err, &ae) && slices.Contains(localAddrErrors, ae.Err) {
		return true
	}
	var ue *url.Error
	return errors.As(err, &ue) && ue.Err != nil && strings.HasPrefix(ue.Err.Error(), "unsupported protocol scheme")
}

// classifiedError carries classify's verdict; its message and chain are
// those of the wrapped error.
type classifiedError struct {
	kind statusKind
	err  error
}

func (e *classifiedError) Error() string { return e.err.Error() }
func (e *classifiedError) Unwrap() error { return e.err }

func hasKind(err error, k statusKind) bool {
	var c *classifiedError
	return errors.As(err, &c) && c.kind == k
}

// isFatal reports whether err ends Wait and Check at once: a 401, or a
// request that cannot be sent.
func isFatal(err error) bool { return errors.Is(err, ErrUnauthorized) || hasKind(err, statusNotSent) }

// isNotFound reports whether classify found err to be a 404.
func isNotFound(err error) bool { return hasKind(err, statusNotFound) }

// isExpired reports whether classify found that the resourceVersion to
// watch from is too old (410 Gone, or expired): relist.
func isExpired(err error) bool { return hasKind(err, statusExpired) }

// invalid returns an error wrapping ErrInvalidInput; the exported
// functions add the package and function name.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidInput, fmt.Sprintf(format, args...))
}

// isPanic reports whether err is (or wraps) a *PanicError.
func isPanic(err error) bool {
	var pe *PanicError
	return errors.As(err, &pe)
}

// isFatalProbe reports whether a probe's error ends Wait and Check: a 401,
// or a panic of a client.
func isFatalProbe(err error) bool { return isFatal(err) || isPanic(err) }

// fatalProbeErr is the error that ends Check for a fatal probe error of
// requirement name: a 401 as it is (it names its request), a panic with the
// requirement's name.
func fatalProbeErr(name string, err error) error {
	if isFatal(err) {
		return err
	}
	return fmt.Errorf("cnibootstrap: %s: %w", name, err)
}
