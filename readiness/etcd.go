package readiness

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultHealthKey is the key EtcdHealthy reads, as etcdctl endpoint
// health does. It need not exist.
const DefaultHealthKey = "health"

// EtcdOption configures EtcdHealthy.
type EtcdOption func(*etcdCheck) error

// WithMemberQuorum adds a membership test to EtcdHealthy: the member list
// (a serializable read, so it is answered even without quorum) is read,
// every voting member is asked for its Status at its client URLs, and the
// check fails unless a quorum of them answer. The failure names the
// members that did not answer. Learners are not counted.
func WithMemberQuorum() EtcdOption {
	return func(e *etcdCheck) error {
		e.quorum = true
		return nil
	}
}

// WithHealthKey sets the key of the linearizable read (default
// DefaultHealthKey). key must not be empty.
func WithHealthKey(key string) EtcdOption {
	return func(e *etcdCheck) error {
		if key == "" {
			return errors.New("WithHealthKey: empty key")
		}
		e.key = key
		return nil
	}
}

// EtcdHealthy returns a check that an etcd cluster is healthy: a member
// reports a leader (Maintenance.Status), a linearizable read of the health
// key succeeds (it needs a quorum; "permission denied" still counts, as in
// etcdctl endpoint health), and no alarm (NOSPACE, CORRUPT) is active.
// With WithMemberQuorum it also requires a quorum of voting members to
// answer Status. The probes run concurrently: Status of every endpoint of
// c and of every voting member (at its client URLs, from the member list,
// a serializable read), the read and the alarm list.
//
// The check returns as soon as its answer is known, cancelling the probes
// still out: healthy once the read, the alarm list and a leader (with
// WithMemberQuorum, a quorum of answers) are in, however long a dead
// member would take to time out; not healthy once more voting members
// than quorum allows certainly cannot answer (nothing listens at any of
// their URLs) and every member has answered or failed Status, or no
// endpoint of c can be reached; otherwise when every probe has returned
// or ctx has ended. (A member that accepts connections but never answers
// holds the client's own requests routed to it, and so the check, until
// ctx ends.) A failure is an *EtcdError listing
// every problem, with members named, and every voting member that did not
// answer named with its URLs ("m1 (8211f1d0f64f3269) at
// https://10.0.0.2:2379: no answer: ..."), with or without
// WithMemberQuorum.
//
// Status calls dial each endpoint or member URL directly through c
// (c.Dial, with c's TLS configuration, credentials and dial options), and
// do not wait for a connection that is refused. Checks are bounded by ctx
// (Wait's attempt timeout) and never wait past it for a probe; nothing
// outlives the call, with one exception: if c was made with
// grpc.WithBlock in its DialOptions, c.Dial blocks until the connection
// is ready or c's DialTimeout (without one, until c is closed), whatever
// ctx says. A dial still blocked when the check returns is abandoned: its
// goroutine ends, closing the connection, when c.Dial returns. While it
// is blocked, later calls of the same check do not dial that URL again:
// they only test with a plain connection whether anything listens there
// (nothing does: the member is down) and otherwise count the member as
// not answering. So, with grpc.WithBlock, the goroutines left behind do
// not grow with the number of calls (one per URL, or one per concurrent
// call that found none blocked), and last at most c's DialTimeout;
// without grpc.WithBlock, none is left.
//
// A nil client (a typed nil too, or a clientv3.Client not made by
// clientv3.New) or a bad option makes every call fail with a permanent
// ErrInvalid error; a closed client, too, and a client none of whose
// endpoints can ever be dialled (a port out of range or not a number, a
// host that is neither an IP address nor a DNS name: the client would
// reject it before sending anything). Such an endpoint among good ones,
// or such a client URL of a member, counts as not answering.
// EtcdHealthy does not block; the check is safe for concurrent use.
//
// etcd authentication (when enabled): on etcd v3.6 Status needs the root
// role, and without it every call fails with an error wrapping
// ErrAccessDenied; etcd v3.7 lets any authenticated user ask for Status.
// The read and AlarmList need no particular permission.
func EtcdHealthy(c *clientv3.Client, opts ...EtcdOption) Check {
	e := &etcdCheck{c: c, key: DefaultHealthKey}
	switch {
	case c == nil:
		e.bad = nilArg("EtcdHealthy", "*clientv3.Client", nil)
	case c.Ctx() == nil:
		e.bad = invalid("EtcdHealthy: the *clientv3.Client was not made by clientv3.New (it has no context)")
	default:
		e.bad = applyOptions("EtcdHealthy", e, opts)
	}
	return e
}

type etcdCheck struct {
	c      *clientv3.Client
	key    string
	quorum bool
	bad    error

	mu    sync.Mutex
	stuck map[string]int // probe key → abandoned dials not yet returned (see dial)
}

func (e *etcdCheck) Name() string { return "etcd" }

// EtcdError says why an etcd cluster is not healthy.
type EtcdError struct {
	// Problems lists every reason, leader first, then the read, the
	// alarms and the members.
	Problems []string
	// Alarms lists the active alarms as "NOSPACE on member m0
	// (8e9e05c52164694d)".
	Alarms []string
	// Unreachable lists the voting members that did not answer Status,
	// as "m1 (8211f1d0f64f3269) at http://127.0.0.1:2379: <why>"; with
	// or without WithMemberQuorum.
	Unreachable []string
	errs        []error
}

func (e *EtcdError) Error() string {
	return "etcd not healthy: " + strings.Join(e.Problems, "; ")
}

// Unwrap returns the failures of the requests behind Problems and
// Unreachable (the Status calls, the read, the alarm list, the member
// list), each naming its endpoint or member where it has one, so that
// errors.Is(err, ErrAccessDenied) and rpctypes comparisons work: a user
// without the root role under etcd v3.6 authentication gets
// ErrAccessDenied from Status.
func (e *EtcdError) Unwrap() []error { return e.errs }

func (e *etcdCheck) Check(ctx context.Context) error {
	if e.bad != nil {
		return e.bad
	}
	if e.c.Ctx().Err() != nil {
		return invalid("EtcdHealthy: the *clientv3.Client is closed")
	}
	if eps := e.c.Endpoints(); len(eps) > 0 {
		var bad []string
		for _, ep := range eps {
			if _, _, err := etcdAddr(ep); err != nil {
				bad = append(bad, strings.TrimPrefix(err.Error(), ErrInvalid.Error()+": "))
			}
		}
		if len(bad) == len(eps) {
			return invalid("EtcdHealthy: no endpoint of the client can ever be dialled: %s", strings.Join(bad, "; "))
		}
	}
	return settle(newEtcdRound(e).run(ctx))
}

// memberLabel is "name (hex id)", or the ID alone when the name is not
// known (a member added but not started has none).
func memberLabel(names map[uint64]string, id uint64) string {
	if n := names[id]; n != "" {
		return fmt.Sprintf("%s (%x)", n, id)
	}
	return fmt.Sprintf("%x", id)
}
