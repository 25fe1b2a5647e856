package readiness

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
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
// answer Status. The probes run concurrently; the failure is an
// *EtcdError listing every problem, with members named ("m1
// (8211f1d0f64f3269) at https://10.0.0.2:2379").
//
// Status calls dial each endpoint or member URL directly through c, with
// c's TLS configuration; nothing outlives the call. Checks are bounded by
// ctx (Wait's attempt timeout); an unreachable member costs the rest of
// it. A nil client or a bad option makes every call fail with a permanent
// ErrInvalid error. EtcdHealthy does not block; the check is safe for
// concurrent use.
//
// etcd authentication (when enabled): Status needs the root role; the
// read and AlarmList need no particular permission. Without the root role
// every call fails with an error wrapping ErrAccessDenied.
func EtcdHealthy(c *clientv3.Client, opts ...EtcdOption) Check {
	e := &etcdCheck{c: c, key: DefaultHealthKey}
	if c == nil {
		e.bad = invalid("EtcdHealthy: nil *clientv3.Client")
	} else {
		e.bad = applyOptions("EtcdHealthy", e, opts)
	}
	return e
}

type etcdCheck struct {
	c      *clientv3.Client
	key    string
	quorum bool
	bad    error
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
	// Unreachable lists the voting members that did not answer Status
	// (WithMemberQuorum only), as "m1 (8211f1d0f64f3269) at
	// http://127.0.0.1:2379: <why>".
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
// without the root role under etcd authentication gets ErrAccessDenied
// from Status.
func (e *EtcdError) Unwrap() []error { return e.errs }

func (e *etcdCheck) Check(ctx context.Context) error {
	if e.bad != nil {
		return e.bad
	}
	if e.c.Ctx().Err() != nil {
		return invalid("EtcdHealthy: the *clientv3.Client is closed")
	}
	var (
		wg       sync.WaitGroup
		readErr  error
		alarmErr error
		alarms   *clientv3.AlarmResponse
		leader   leaderResult
	)
	wg.Go(func() {
		if _, err := e.c.Get(ctx, e.key); err != nil && !etcdReadDenied(err) {
			readErr = classifyEtcd(err)
		}
	})
	wg.Go(func() {
		alarms, alarmErr = e.c.AlarmList(ctx)
		alarmErr = classifyEtcd(alarmErr)
	})
	wg.Go(func() {
		if e.quorum {
			leader = e.memberStatus(ctx)
		} else {
			leader = e.endpointStatus(ctx)
		}
	})
	wg.Wait()

	res := &EtcdError{}
	res.Problems = append(res.Problems, leader.problems...)
	res.Unreachable = leader.unreachable
	res.errs = append(res.errs, leader.errs...)
	if readErr != nil {
		res.Problems = append(res.Problems, fmt.Sprintf("linearizable read of %q failed: %v", e.key, readErr))
		res.errs = append(res.errs, readErr)
	}
	switch {
	case alarmErr != nil:
		res.Problems = append(res.Problems, fmt.Sprintf("cannot list alarms: %v", alarmErr))
		res.errs = append(res.errs, alarmErr)
	case len(alarms.Alarms) > 0:
		names := leader.names
		if names == nil {
			// Unnamed (IDs only) if the members cannot be listed.
			_, names, _ = e.listMembers(ctx)
		}
		for _, a := range alarms.Alarms {
			res.Alarms = append(res.Alarms, fmt.Sprintf("%s on member %s", a.Alarm, memberLabel(names, a.MemberID)))
		}
		sort.Strings(res.Alarms)
		res.Problems = append(res.Problems, "active alarm(s): "+strings.Join(res.Alarms, ", "))
	}
	if len(res.Problems) == 0 {
		return nil
	}
	return res
}

// leaderResult is what the Status probes found.
type leaderResult struct {
	problems    []string
	unreachable []string
	names       map[uint64]string // member names by ID, when listed
	errs        []error           // the failures behind problems and unreachable
}

// endpointStatus asks every endpoint of the client for its Status and
// passes if any of them reports a leader.
func (e *etcdCheck) endpointStatus(ctx context.Context) leaderResult {
	eps := e.c.Endpoints()
	if len(eps) == 0 {
		return leaderResult{problems: []string{"the client has no endpoints"}}
	}
	type answer struct {
		leader uint64
		err    error
	}
	answers := make([]answer, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Go(func() {
			resp, err := e.c.Status(ctx, ep)
			if err != nil {
				answers[i].err = classifyEtcd(err)
				return
			}
			answers[i].leader = resp.Leader
		})
	}
	wg.Wait()
	var (
		failures []string
		errs     []error
	)
	answered := 0
	for i, a := range answers {
		if a.err != nil {
			failures = append(failures, fmt.Sprintf("%s: %v", eps[i], a.err))
			errs = append(errs, fmt.Errorf("status of %s: %w", eps[i], a.err))
			continue
		}
		answered++
		if a.leader != 0 {
			return leaderResult{}
		}
	}
	if answered == 0 {
		return leaderResult{problems: []string{"no endpoint answered Status: " + strings.Join(failures, ", ")}, errs: errs}
	}
	return leaderResult{problems: []string{fmt.Sprintf("no leader known to the %d of %d endpoint(s) that answered", answered, len(eps))}}
}

// memberStatus lists the members and asks every voting member for its
// Status; it passes if a quorum answers and one of them knows a leader.
func (e *etcdCheck) memberStatus(ctx context.Context) leaderResult {
	members, names, err := e.listMembers(ctx)
	if err != nil {
		return leaderResult{problems: []string{fmt.Sprintf("cannot list members: %v", err)}, errs: []error{err}}
	}
	type answer struct {
		leader uint64
		why    string  // empty if it answered
		errs   []error // the failures behind why
	}
	var voting []int
	for i, m := range members {
		if !m.IsLearner {
			voting = append(voting, i)
		}
	}
	answers := make([]answer, len(voting))
	var wg sync.WaitGroup
	for j, i := range voting {
		m := members[i]
		wg.Go(func() {
			if len(m.ClientURLs) == 0 {
				answers[j].why = "not started (no client URLs)"
				return
			}
			var whys []string
			for _, u := range m.ClientURLs {
				resp, err := e.c.Status(ctx, u)
				if err == nil {
					answers[j] = answer{leader: resp.Leader}
					return
				}
				if errors.Is(err, context.DeadlineExceeded) {
					// The client waits for a connection until the
					// deadline: a member that is down looks like this.
					err = fmt.Errorf("no answer before the deadline: %w", err)
				}
				err = classifyEtcd(err)
				whys = append(whys, fmt.Sprintf("at %s: %v", u, err))
				answers[j].errs = append(answers[j].errs, fmt.Errorf("status of member %s at %s: %w", memberLabel(names, m.ID), u, err))
			}
			answers[j].why = strings.Join(whys, ", ")
		})
	}
	wg.Wait()

	res := leaderResult{names: names}
	var leader uint64
	answered := 0
	for j, i := range voting {
		a := answers[j]
		if a.why != "" {
			res.unreachable = append(res.unreachable, memberLabel(names, members[i].ID)+" "+a.why)
			res.errs = append(res.errs, a.errs...)
			continue
		}
		answered++
		if a.leader != 0 {
			leader = a.leader
		}
	}
	sort.Strings(res.unreachable)
	need := len(voting)/2 + 1
	if answered < need {
		res.problems = append(res.problems, fmt.Sprintf("%d of %d voting members unreachable, quorum needs %d to answer: %s",
			len(voting)-answered, len(voting), need, strings.Join(res.unreachable, "; ")))
	}
	if answered > 0 && leader == 0 {
		res.problems = append([]string{fmt.Sprintf("no leader known to the %d voting member(s) that answered", answered)}, res.problems...)
	}
	return res
}

// listMembers lists the members (a serializable read, so it is answered
// even without quorum) and maps their IDs to their names. The error is
// classified.
func (e *etcdCheck) listMembers(ctx context.Context) ([]*etcdserverpb.Member, map[uint64]string, error) {
	ml, err := e.c.MemberList(ctx, clientv3.WithSerializable())
	if err != nil {
		return nil, nil, classifyEtcd(err)
	}
	names := make(map[uint64]string, len(ml.Members))
	for _, m := range ml.Members {
		names[m.ID] = m.Name
	}
	return ml.Members, names, nil
}

// memberLabel is "name (hex id)", or the ID alone when the name is not
// known (a member added but not started has none).
func memberLabel(names map[uint64]string, id uint64) string {
	if n := names[id]; n != "" {
		return fmt.Sprintf("%s (%x)", n, id)
	}
	return fmt.Sprintf("%x", id)
}
