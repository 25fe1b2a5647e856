package readiness

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// An etcdRound is one call of EtcdHealthy's check: its probes run
// concurrently and report here; run decides as soon as the answer is
// known.
type etcdRound struct {
	e *etcdCheck

	mu      sync.Mutex
	wake    chan struct{} // a probe reported
	pending int           // probes still out
	closed  bool          // decided: later reports are ignored
	wg      sync.WaitGroup
	ctx     context.Context

	readDone bool
	readErr  error

	alarmsDone bool
	alarms     []*pb.AlarmMember
	alarmErr   error

	membersDone bool
	members     []*pb.Member // voting members only
	names       map[uint64]string
	membersErr  error

	endpoints []string          // probe keys of c's endpoints, in order
	probes    map[string]*probe // by probeKey
}

// probe is one Status call.
type probe struct {
	url    string
	done   bool
	leader uint64
	err    error
	dead   bool // nothing answered at the transport level: the member is down
}

func newEtcdRound(e *etcdCheck) *etcdRound {
	return &etcdRound{e: e, wake: make(chan struct{}, 1), probes: map[string]*probe{}}
}

// probeKey makes an endpoint ("127.0.0.1:2379") and a member's client URL
// ("http://127.0.0.1:2379") for the same place one key.
func probeKey(u string) string {
	if _, rest, ok := strings.Cut(u, "://"); ok {
		u = rest
	}
	return strings.TrimSuffix(u, "/")
}

// launch runs f as a probe. f runs with r.mu unlocked and returns what to
// record, which runs with r.mu locked unless the round is decided. A
// panic in f (in the client) is recorded as the probe's error by fail.
// Called with r.mu locked.
func (r *etcdRound) launch(what string, f func() func(), fail func(error)) {
	r.pending++
	r.wg.Go(func() {
		var record func()
		guarded("etcd: "+what, func() error { record = f(); return nil }, func(err error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.pending--
			if !r.closed {
				if err != nil {
					fail(err)
				} else {
					record()
				}
			}
			select {
			case r.wake <- struct{}{}:
			default:
			}
		})
	})
}

func (r *etcdRound) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	r.ctx = ctx
	defer func() {
		// Nothing outlives the call: the probes still out are cancelled
		// and awaited.
		cancel()
		r.wg.Wait()
	}()
	c := r.e.c

	r.mu.Lock()
	r.launch("Get", func() func() {
		_, err := c.Get(ctx, r.e.key)
		return func() {
			r.readDone = true
			if err != nil && !etcdReadDenied(err) {
				r.readErr = classifyEtcd(err)
			}
		}
	}, func(err error) { r.readDone, r.readErr = true, err })
	r.launch("AlarmList", func() func() {
		resp, err := c.AlarmList(ctx)
		return func() {
			r.alarmsDone, r.alarmErr = true, classifyEtcd(err)
			if err == nil && resp != nil {
				r.alarms = resp.Alarms
			}
		}
	}, func(err error) { r.alarmsDone, r.alarmErr = true, err })
	r.launch("MemberList", func() func() {
		ml, err := c.MemberList(ctx, clientv3.WithSerializable())
		return func() { r.recordMembers(ml, classifyEtcd(err)) }
	}, func(err error) { r.membersDone, r.membersErr = true, err })
	for _, ep := range c.Endpoints() {
		k := probeKey(ep)
		if _, dup := r.probes[k]; !dup {
			r.endpoints = append(r.endpoints, k)
			r.probeStatus(ep)
		}
	}
	r.mu.Unlock()

	for {
		r.mu.Lock()
		decided, healthy := r.decide()
		if decided {
			r.closed = true
			var err error
			if !healthy {
				err = r.failure()
			}
			r.mu.Unlock()
			return err
		}
		r.mu.Unlock()
		<-r.wake
	}
}

// recordMembers records the member list and probes every voting member's
// client URLs not probed yet. Called with r.mu locked.
func (r *etcdRound) recordMembers(ml *clientv3.MemberListResponse, err error) {
	r.membersDone, r.membersErr = true, err
	if err != nil || ml == nil {
		if err == nil {
			r.membersErr = errors.New("the client returned no member list and no error")
		}
		return
	}
	r.names = make(map[uint64]string, len(ml.Members))
	for _, m := range ml.Members {
		r.names[m.ID] = m.Name
		if m.IsLearner {
			continue
		}
		r.members = append(r.members, m)
		for _, u := range m.ClientURLs {
			if _, seen := r.probes[probeKey(u)]; !seen {
				r.probeStatus(u)
			}
		}
	}
}

// probeStatus asks url for its Status. Called with r.mu locked.
func (r *etcdRound) probeStatus(url string) {
	p := &probe{url: url}
	r.probes[probeKey(url)] = p
	r.launch("Status of "+url, func() func() {
		resp, err := r.status(url)
		return func() {
			p.done = true
			switch {
			case err != nil:
				p.err = classifyEtcd(err)
				p.dead = refused(err) || errors.Is(err, ErrUnreachable) || errors.Is(err, ErrInvalid)
			case resp == nil:
				p.err = errors.New("no status and no error")
			default:
				p.leader = resp.Leader
			}
		}
	}, func(err error) { p.done, p.err = true, err })
}

// status is Maintenance.Status of one endpoint, except that it does not
// wait for a connection that cannot be made: a member that is down fails
// at once instead of at the deadline. It never waits past the round's
// context: a dial through a client made with grpc.WithBlock that is
// still blocked then is abandoned (see dial), and while it stays blocked
// later rounds only test with a plain connection whether anything
// listens at url. An URL that can never be dialled fails at once with an
// error wrapping ErrInvalid.
func (r *etcdRound) status(url string) (*pb.StatusResponse, error) {
	network, addr, err := etcdAddr(url)
	if err != nil {
		return nil, err
	}
	if r.e.stuckDial(url) {
		if network != "" {
			if err := listening(r.ctx, network, addr); err != nil {
				return nil, err
			}
		}
		return nil, fmt.Errorf("no answer: the client's dial from an earlier check is still blocked (a client made with grpc.WithBlock waits for a ready connection until its DialTimeout or Close)")
	}
	conn, err := r.e.dial(r.ctx, url)
	if err != nil {
		return nil, clientv3.ContextError(r.ctx, err)
	}
	defer func() { _ = conn.Close() }()
	resp, err := pb.NewMaintenanceClient(conn).Status(r.ctx, &pb.StatusRequest{}, grpc.WaitForReady(false))
	return resp, clientv3.ContextError(r.ctx, err)
}

// refused reports whether err says that nothing answered at the transport
// level (connection refused, no route): the member is down, not slow.
func refused(err error) bool {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return false // the server answered
	}
	return status.Code(err) == codes.Unavailable
}

// decide reports whether the answer is known, and if so whether it is
// healthy. Called with r.mu locked.
func (r *etcdRound) decide() (decided, healthy bool) {
	if r.healthy() {
		return true, true
	}
	return r.pending == 0 || (r.quorumLost() && r.statusesIn()) || r.unreachable(), false
}

// statusesIn reports whether every Status probe has returned: a live
// member answers in milliseconds, so when quorum is lost the check waits
// for them, to name exactly the members that are down.
func (r *etcdRound) statusesIn() bool {
	if !r.membersDone {
		return false
	}
	for _, p := range r.probes {
		if !p.done {
			return false
		}
	}
	return true
}

func (r *etcdRound) healthy() bool {
	if !r.readDone || r.readErr != nil || !r.alarmsDone || r.alarmErr != nil || len(r.alarms) > 0 || r.leader() == 0 {
		return false
	}
	if !r.e.quorum {
		return true
	}
	answered, _ := r.count()
	return r.membersDone && r.membersErr == nil && answered >= r.need()
}

// leader is a leader reported by any Status answer, or 0.
func (r *etcdRound) leader() uint64 {
	for _, p := range r.probes {
		if p.done && p.err == nil && p.leader != 0 {
			return p.leader
		}
	}
	return 0
}

func (r *etcdRound) need() int { return len(r.members)/2 + 1 }

// count returns how many voting members answered Status, and how many
// certainly cannot (no client URLs, or nothing listens at any of them).
func (r *etcdRound) count() (answered, dead int) {
	for _, m := range r.members {
		switch r.memberState(m) {
		case memberAnswered:
			answered++
		case memberDead:
			dead++
		}
	}
	return answered, dead
}

type memberState int

const (
	memberPending memberState = iota
	memberAnswered
	memberFailed // answered with an error, or timed out
	memberDead
)

func (r *etcdRound) memberState(m *pb.Member) memberState {
	if len(m.ClientURLs) == 0 {
		return memberDead
	}
	st := memberDead
	for _, u := range m.ClientURLs {
		p := r.probes[probeKey(u)]
		switch {
		case p == nil || !p.done:
			if st == memberDead {
				st = memberPending
			}
		case p.err == nil:
			return memberAnswered
		case !p.dead:
			st = memberFailed
		}
	}
	return st
}

// quorumLost reports whether more voting members than quorum allows
// certainly cannot answer: then the read cannot succeed, and the check
// need not wait for it.
func (r *etcdRound) quorumLost() bool {
	if !r.membersDone || len(r.members) == 0 {
		return false
	}
	_, dead := r.count()
	return dead > len(r.members)-r.need()
}

// unreachable reports whether no endpoint of the client can be reached.
func (r *etcdRound) unreachable() bool {
	if len(r.endpoints) == 0 {
		return false
	}
	for _, k := range r.endpoints {
		if p := r.probes[k]; !p.done || !p.dead {
			return false
		}
	}
	return true
}

// failure builds the *EtcdError. Called with r.mu locked, once decided.
func (r *etcdRound) failure() error {
	cut := "the check ended"
	switch {
	case r.quorumLost():
		cut = "quorum is lost"
	case r.unreachable():
		cut = "no endpoint is reachable"
	}
	notYet := fmt.Sprintf("no answer before %s", cut)
	res := &EtcdError{}

	// The leader.
	if r.leader() == 0 {
		answered := 0
		var whys []string
		for _, k := range r.endpoints {
			p := r.probes[k]
			if p.done && p.err == nil {
				answered++
				continue
			}
			whys = append(whys, fmt.Sprintf("%s: %s", p.url, r.probeWhy(p, notYet)))
		}
		for _, p := range r.probes {
			if p.done && p.err == nil && !r.isEndpoint(p) {
				answered++
			}
		}
		switch {
		case len(r.endpoints) == 0:
			res.Problems = append(res.Problems, "the client has no endpoints")
		case answered == 0:
			res.Problems = append(res.Problems, "no endpoint answered Status: "+strings.Join(whys, ", "))
		default:
			res.Problems = append(res.Problems, fmt.Sprintf("no leader known to the %d member(s) that answered Status", answered))
		}
		for _, k := range r.endpoints {
			if p := r.probes[k]; p.done && p.err != nil {
				res.errs = append(res.errs, fmt.Errorf("status of %s: %w", p.url, p.err))
			}
		}
	}

	// The read.
	switch {
	case !r.readDone:
		res.Problems = append(res.Problems, fmt.Sprintf("linearizable read of %q failed: %s", r.e.key, notYet))
	case r.readErr != nil:
		res.Problems = append(res.Problems, fmt.Sprintf("linearizable read of %q failed: %v", r.e.key, r.readErr))
		res.errs = append(res.errs, r.readErr)
	}

	// The alarms.
	switch {
	case !r.alarmsDone:
		res.Problems = append(res.Problems, "cannot list alarms: "+notYet)
	case r.alarmErr != nil:
		res.Problems = append(res.Problems, fmt.Sprintf("cannot list alarms: %v", r.alarmErr))
		res.errs = append(res.errs, r.alarmErr)
	case len(r.alarms) > 0:
		for _, a := range r.alarms {
			res.Alarms = append(res.Alarms, fmt.Sprintf("%s on member %s", a.Alarm, memberLabel(r.names, a.MemberID)))
		}
		sort.Strings(res.Alarms)
		res.Problems = append(res.Problems, "active alarm(s): "+strings.Join(res.Alarms, ", "))
	}

	// The members.
	switch {
	case !r.membersDone:
		if r.e.quorum {
			res.Problems = append(res.Problems, "cannot list members: "+notYet)
		}
	case r.membersErr != nil:
		if r.e.quorum {
			res.Problems = append(res.Problems, fmt.Sprintf("cannot list members: %v", r.membersErr))
			res.errs = append(res.errs, r.membersErr)
		}
	default:
		answered := 0
		for _, m := range r.members {
			if r.memberState(m) == memberAnswered {
				answered++
				continue
			}
			res.Unreachable = append(res.Unreachable, memberLabel(r.names, m.ID)+" "+r.memberWhy(m, notYet, &res.errs))
		}
		sort.Strings(res.Unreachable)
		need := r.need()
		switch {
		case answered < need:
			res.Problems = append(res.Problems, fmt.Sprintf("%d of %d voting members unreachable, quorum needs %d to answer: %s",
				len(r.members)-answered, len(r.members), need, strings.Join(res.Unreachable, "; ")))
		case len(res.Unreachable) > 0:
			res.Problems = append(res.Problems, fmt.Sprintf("%d of %d voting members unreachable: %s",
				len(res.Unreachable), len(r.members), strings.Join(res.Unreachable, "; ")))
		}
	}
	if len(res.Problems) == 0 {
		// Decided by the end of ctx with nothing else to say.
		res.Problems = append(res.Problems, "no answer before the check ended")
	}
	return res
}

func (r *etcdRound) isEndpoint(p *probe) bool {
	for _, k := range r.endpoints {
		if r.probes[k] == p {
			return true
		}
	}
	return false
}

// probeWhy says why p did not answer.
func (r *etcdRound) probeWhy(p *probe, notYet string) string {
	switch {
	case !p.done:
		return notYet
	case p.dead:
		return fmt.Sprintf("no answer: %v", p.err)
	case errors.Is(p.err, context.DeadlineExceeded):
		// The deadline came first: a member that is cut off looks
		// like this.
		return fmt.Sprintf("no answer before the deadline: %v", p.err)
	}
	return errString(p.err)
}

// memberWhy says why voting member m did not answer, at each of its URLs,
// adding the failures to errs.
func (r *etcdRound) memberWhy(m *pb.Member, notYet string, errs *[]error) string {
	if len(m.ClientURLs) == 0 {
		return "not started (no client URLs)"
	}
	var whys []string
	for _, u := range m.ClientURLs {
		p := r.probes[probeKey(u)]
		if p == nil {
			continue
		}
		whys = append(whys, fmt.Sprintf("at %s: %s", u, r.probeWhy(p, notYet)))
		if p.done && p.err != nil {
			*errs = append(*errs, fmt.Errorf("status of member %s at %s: %w", memberLabel(r.names, m.ID), u, p.err))
		}
	}
	return strings.Join(whys, ", ")
}
