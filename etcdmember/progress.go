package etcdmember

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// statusTimeout bounds a status probe of one member (less if the RPC
// timeout is shorter). A member that does not answer in time is only
// "unknown": a learner's etcd accepts connections before it serves them,
// and a probe must not hold up the next promote attempt.
const statusTimeout = time.Second

// readyFraction is etcd's own threshold: a learner is ready to be promoted
// once its log is within 90 % of the leader's.
const readyFraction = 0.9

// Progress is one reading of a learner's catch-up, from Maintenance.Status
// on the learner's and the leader's client URLs.
type Progress struct {
	// ID and Name identify the learner (Name is empty until it started).
	ID   uint64
	Name string
	// Started is true once the learner's etcd has started and joined.
	Started bool
	// LearnerApplied is the learner's raft applied index, zero when it
	// could not be read.
	LearnerApplied uint64
	// LeaderID and LeaderApplied are the leader's member ID and raft
	// applied index, zero when they could not be read (or were not: while
	// a learner has not started, Promote reads only the member list).
	LeaderID      uint64
	LeaderApplied uint64
	// NoProgressFor is how long LearnerApplied has not advanced (or the
	// learner has not started).
	NoProgressFor time.Duration
	// Err says why an index could not be read; nil when both were.
	Err error

	learnerOK, leaderOK bool
}

// CaughtUp reports whether the learner's applied index is within etcd's
// readiness threshold (90 %) of the leader's. Both must have been read.
func (p Progress) CaughtUp() bool {
	return p.Started && p.learnerOK && p.leaderOK && p.LeaderApplied > 0 &&
		float64(p.LearnerApplied) >= readyFraction*float64(p.LeaderApplied)
}

// behind reports whether the reading shows for certain that etcd would
// refuse to promote the learner: it has not started, or both indices were
// read and it is short of the threshold.
func (p Progress) behind() bool {
	if !p.Started {
		return true
	}
	return p.learnerOK && p.leaderOK && !p.CaughtUp()
}

// pending describes the reading for an error or log message.
func (p Progress) pending() string {
	if !p.Started {
		return fmt.Sprintf("waiting for learner %x to start", p.ID)
	}
	if p.learnerOK && p.leaderOK {
		return fmt.Sprintf("waiting for learner %x (%s) to catch up: applied index %d of leader's %d",
			p.ID, p.Name, p.LearnerApplied, p.LeaderApplied)
	}
	return fmt.Sprintf("waiting for learner %x (%s) to catch up (status unknown: %v)", p.ID, p.Name, p.Err)
}

// stallClock tracks when a learner's applied index last advanced.
type stallClock struct {
	best  uint64
	since time.Time
}

func newStallClock(now time.Time) *stallClock { return &stallClock{since: now} }

// observe records a reading, sets p.NoProgressFor, and reports whether the
// learner's index advanced.
func (s *stallClock) observe(p *Progress, now time.Time) bool {
	advanced := p.Started && p.learnerOK && p.LearnerApplied > s.best
	if advanced {
		s.best, s.since = p.LearnerApplied, now
	}
	p.NoProgressFor = now.Sub(s.since)
	return advanced
}

// stalled reports whether the reading counts as a stall: no progress for
// the timeout and not caught up.
func stalled(p Progress, timeout time.Duration) bool {
	return p.NoProgressFor >= timeout && !p.CaughtUp()
}

// progress reads a learner's and the leader's applied indices. It does not
// fail: what it could not read is in Progress.Err.
func (m *Manager) progress(ctx context.Context, members []Member, learner Member) Progress {
	p, hint := m.learnerStatus(ctx, learner)
	id, applied, err := m.leaderStatus(ctx, members, hint)
	p.setLeader(id, applied, err)
	return p
}

// learnerStatus reads the learner's applied index (when it has started)
// and returns the leader it knows of, or 0.
func (m *Manager) learnerStatus(ctx context.Context, learner Member) (Progress, uint64) {
	p := Progress{ID: learner.ID, Name: learner.Name, Started: learner.Started()}
	if !p.Started {
		return p, 0
	}
	st, err := m.status(ctx, learner.ClientURLs)
	if err != nil {
		p.Err = fmt.Errorf("learner %x: %w", learner.ID, err)
		return p, 0
	}
	p.LearnerApplied, p.learnerOK = st.RaftAppliedIndex, true
	return p, st.Leader
}

// setLeader records the leader's reading (or why there is none).
func (p *Progress) setLeader(id, applied uint64, err error) {
	if err != nil {
		p.Err = errors.Join(p.Err, err)
		return
	}
	p.LeaderID, p.LeaderApplied, p.leaderOK = id, applied, true
}

// report hands a reading to the WithProgress callback.
func (m *Manager) report(p Progress) {
	if m.opt.progress != nil {
		m.opt.progress(p)
	}
}

// status asks one member for its status on each of its client URLs in
// turn, returning the first answer.
func (m *Manager) status(ctx context.Context, urls []string) (*clientv3.StatusResponse, error) {
	err := errors.New("no client URLs")
	timeout := min(m.opt.rpcTimeout, statusTimeout)
	for _, u := range urls {
		rctx, cancel := context.WithTimeout(ctx, timeout)
		st, serr := m.cl.Status(rctx, u)
		cancel()
		if serr == nil && st != nil {
			return st, nil
		}
		if serr == nil {
			serr = errors.New("empty status response")
		}
		err = fmt.Errorf("status of %s: %w", u, serr)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, err
}

// leaderStatus finds the leader (starting from hint, when known, else
// asking the voters) and returns its ID and raft applied index.
func (m *Manager) leaderStatus(ctx context.Context, members []Member, hint uint64) (uint64, uint64, error) {
	tried := map[uint64]bool{}
	ask := func(id uint64) (*clientv3.StatusResponse, error) {
		tried[id] = true
		mem, ok := find(members, id)
		if !ok {
			return nil, fmt.Errorf("leader %x is not in the member list", id)
		}
		return m.status(ctx, mem.ClientURLs)
	}
	lastErr := errors.New("no voter answered")
	if hint != 0 {
		st, err := ask(hint)
		if err == nil && st.Leader == hint {
			return hint, st.RaftAppliedIndex, nil
		}
		if err != nil {
			lastErr = err
		}
	}
	for _, v := range voters(members) {
		if tried[v.ID] || ctx.Err() != nil {
			continue
		}
		st, err := ask(v.ID)
		if err != nil {
			lastErr = err
			continue
		}
		switch {
		case st.Leader == v.ID:
			return v.ID, st.RaftAppliedIndex, nil
		case st.Leader != 0 && !tried[st.Leader]:
			lst, err := ask(st.Leader)
			if err == nil && lst.Leader == st.Leader {
				return st.Leader, lst.RaftAppliedIndex, nil
			}
			if err != nil {
				lastErr = err
			}
		}
	}
	return 0, 0, fmt.Errorf("leader status: %w", lastErr)
}
