package etcdmember

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// statusTimeout bounds a status probe of one member, and the time to
// connect to one endpoint (less if the RPC timeout is shorter). A member
// that does not answer in time is unreachable for that reading.
const statusTimeout = time.Second

// readyFraction is etcd's own threshold: a learner is ready to be promoted
// once its log is within 90 % of the leader's. Here it only decides, with
// nearEntries, whether a reading goes on to the replication check (see
// Progress.CaughtUp).
const readyFraction = 0.9

// nearEntries: a learner at most this many entries behind the leader is
// close enough for the replication check, whatever the fraction. Each
// check adds two entries (a lease granted and revoked), so in a young,
// idle cluster the 90 % rule alone would soon keep a learner that is cut
// off out of the check (and its errors from saying why).
const nearEntries = 1000

// Progress is one reading of a learner's catch-up, from Maintenance.Status
// on the learner's own client URL and on the leader's, and — for a learner
// close to the leader — a replication check (see CaughtUp).
type Progress struct {
	// ID and Name identify the learner (Name is empty until it started).
	ID   uint64
	Name string
	// Started is true once the learner's etcd has started and joined
	// (the member list shows its name and client URLs).
	Started bool
	// Reachable is true when the learner answered every status request on
	// its own client URL in this reading. A started learner that is not
	// reachable is never promoted.
	Reachable bool
	// LearnerApplied is the learner's raft applied index, from its last
	// answer in this reading; meaningful only when Reachable (zero
	// otherwise, and then unknown, not zero).
	LearnerApplied uint64
	// LeaderKnown is true when the leader's ID and raft applied index were
	// read in this reading; LeaderID and LeaderApplied are meaningful only
	// then (while a learner has not started, Promote reads only the member
	// list). When the replication check ran, they are the leader's as read
	// after the check's fresh raft entry.
	LeaderKnown   bool
	LeaderID      uint64
	LeaderApplied uint64
	// ReplicationChecked is true when this reading ran the replication
	// check up to choosing its target: a fresh raft entry was created (a
	// short-lived lease, granted and revoked) and the leader's raft index
	// read after it (ReplicationIndex). The check runs only for a started
	// learner that answered on its client URL close to the leader (see
	// CaughtUp); a reading that could not create the entry or read the
	// leader says why in Err.
	ReplicationChecked bool
	// ReplicationIndex is the check's target: the leader's raft index
	// (commit index, or applied index if higher) read after the fresh
	// entry; zero when ReplicationChecked is false.
	ReplicationIndex uint64
	// Replicating is true when the learner's raft applied index reached
	// ReplicationIndex within the RPC timeout (WithRPCTimeout), read on
	// its own client URL: it is receiving raft entries from the leader
	// now, not only answering status requests.
	Replicating bool
	// NoProgressFor is how long LearnerApplied has not advanced (or the
	// learner has not started, or has not been reachable).
	NoProgressFor time.Duration
	// Err says why something could not be read or checked; nil when
	// everything was.
	Err error
}

// CaughtUp reports whether the reading shows the learner ready to be
// promoted: it has started, answered on its own client URL, the leader was
// read, and the replication check showed it replicating — its applied
// index reached the leader's raft index read after a raft entry created in
// this reading (Replicating). A learner answering status requests while
// its raft links to the leader are cut — at the leader's index in an idle
// cluster, or within 90 % of a large index — is not caught up. The check
// runs only for a learner close to the leader: its applied index within
// etcd's readiness threshold (90 %) of the leader's, or at most 1,000
// entries behind it. Readings that did not run the check are never caught
// up.
func (p Progress) CaughtUp() bool {
	return p.Started && p.Reachable && p.LeaderKnown && p.Replicating
}

// NotReplicating reports whether the learner answered on its client URL
// and the replication check ran, but the learner did not apply the check's
// raft entry within the RPC timeout: it is not receiving raft entries from
// the leader (e.g. its peer links are cut while its client URL answers).
func (p Progress) NotReplicating() bool {
	return p.Started && p.Reachable && p.ReplicationChecked && !p.Replicating
}

// nearLeader reports whether the reading's indices are within etcd's
// readiness threshold: the replication check is worth running.
func (p Progress) nearLeader() bool {
	if !p.Started || !p.Reachable || !p.LeaderKnown || p.LeaderApplied == 0 {
		return false
	}
	return p.LearnerApplied+nearEntries >= p.LeaderApplied ||
		float64(p.LearnerApplied) >= readyFraction*float64(p.LeaderApplied)
}

// Unreachable reports whether the learner has started but did not answer
// a status request on its client URL in this reading.
func (p Progress) Unreachable() bool { return p.Started && !p.Reachable }

// String describes the reading, saying "unknown" for what could not be
// read, e.g. "learner 8e9e05c52164694d (node-2): unreachable (raft applied
// index unknown), leader 2d8e... at raft applied index 1234, no progress
// for 3s; status error: ...".
func (p Progress) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "learner %x", p.ID)
	if p.Name != "" {
		fmt.Fprintf(&b, " (%s)", p.Name)
	}
	switch {
	case !p.Started:
		b.WriteString(": not started")
	case !p.Reachable:
		b.WriteString(": unreachable (raft applied index unknown)")
	default:
		fmt.Fprintf(&b, ": raft applied index %d", p.LearnerApplied)
		switch {
		case p.Replicating:
			fmt.Fprintf(&b, ", replicating (reached raft index %d, the leader's after a fresh raft entry)", p.ReplicationIndex)
		case p.ReplicationChecked:
			fmt.Fprintf(&b, ", not replicating: it did not reach raft index %d (the leader's after a fresh raft entry) within the RPC timeout, so it is not receiving raft entries from the leader", p.ReplicationIndex)
		}
	}
	if p.LeaderKnown {
		fmt.Fprintf(&b, ", leader %x at raft applied index %d", p.LeaderID, p.LeaderApplied)
	} else if p.Started {
		b.WriteString(", leader unknown")
	}
	if p.CaughtUp() {
		b.WriteString(", caught up")
	} else if p.NoProgressFor > 0 {
		fmt.Fprintf(&b, ", no progress for %s", p.NoProgressFor.Round(time.Millisecond))
	}
	if p.Err != nil {
		fmt.Fprintf(&b, "; status error: %v", p.Err)
	}
	return b.String()
}

// pending describes the reading for an error or log message.
func (p Progress) pending() string {
	switch {
	case !p.Started:
		return fmt.Sprintf("waiting for learner %x to start", p.ID)
	case !p.Reachable:
		return fmt.Sprintf("waiting for learner %x (%s) to answer on its client URL: unreachable (%v)", p.ID, p.Name, p.Err)
	case !p.LeaderKnown:
		return fmt.Sprintf("waiting for learner %x (%s) to catch up: applied index %d, leader unknown (%v)", p.ID, p.Name, p.LearnerApplied, p.Err)
	case p.NotReplicating():
		return fmt.Sprintf("waiting for learner %x (%s) to replicate: it did not reach raft index %d (the leader's after a fresh raft entry) within the RPC timeout, so it is not receiving raft entries from the leader (applied index %d)",
			p.ID, p.Name, p.ReplicationIndex, p.LearnerApplied)
	case p.nearLeader() && !p.ReplicationChecked:
		return fmt.Sprintf("waiting for learner %x (%s) to pass the replication check: applied index %d of leader's %d, check not done (%v)",
			p.ID, p.Name, p.LearnerApplied, p.LeaderApplied, p.Err)
	}
	return fmt.Sprintf("waiting for learner %x (%s) to catch up: applied index %d of leader's %d",
		p.ID, p.Name, p.LearnerApplied, p.LeaderApplied)
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
	advanced := p.Started && p.Reachable && p.LearnerApplied > s.best
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

// progress reads a learner's (on its own client URLs) and the leader's
// applied indices. It does not fail: what it could not read is in
// Progress.Err.
func (c *call) progress(ctx context.Context, members []Member, learner Member) Progress {
	p, hint := c.learnerStatus(ctx, learner)
	id, applied, err := c.leaderStatus(ctx, members, hint)
	p.setLeader(id, applied, err)
	return p
}

// learnerStatus reads the learner's applied index on its own client URLs
// (when it has started) and returns the leader it knows of, or 0.
func (c *call) learnerStatus(ctx context.Context, learner Member) (Progress, uint64) {
	p := Progress{ID: learner.ID, Name: learner.Name, Started: learner.Started()}
	if !p.Started {
		return p, 0
	}
	st, err := c.status(ctx, learner.ClientURLs)
	if err != nil {
		p.Err = fmt.Errorf("learner %x unreachable: %w", learner.ID, err)
		return p, 0
	}
	p.LearnerApplied, p.Reachable = st.RaftAppliedIndex, true
	return p, st.Leader
}

// setLeader records the leader's reading (or why there is none).
func (p *Progress) setLeader(id, applied uint64, err error) {
	if err != nil {
		p.Err = errors.Join(p.Err, err)
		return
	}
	p.LeaderID, p.LeaderApplied, p.LeaderKnown = id, applied, true
}

// leaderStatus finds the leader (starting from hint, when known, else
// asking the voters) and returns its ID and raft applied index.
func (c *call) leaderStatus(ctx context.Context, members []Member, hint uint64) (uint64, uint64, error) {
	id, st, err := c.leader(ctx, members, hint)
	if err != nil {
		return 0, 0, err
	}
	return id, st.RaftAppliedIndex, nil
}

// leader finds the leader (starting from hint, when known, else asking the
// voters) and returns its ID and its own status.
func (c *call) leader(ctx context.Context, members []Member, hint uint64) (uint64, *pb.StatusResponse, error) {
	tried := map[uint64]bool{}
	ask := func(id uint64) (*pb.StatusResponse, error) {
		tried[id] = true
		mem, ok := find(members, id)
		if !ok {
			return nil, fmt.Errorf("leader %x is not in the member list", id)
		}
		return c.status(ctx, mem.ClientURLs)
	}
	lastErr := errors.New("no voter answered")
	if hint != 0 {
		st, err := ask(hint)
		if err == nil && st.Leader == hint {
			return hint, st, nil
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
			return v.ID, st, nil
		case st.Leader != 0 && !tried[st.Leader]:
			lst, err := ask(st.Leader)
			if err == nil && lst.Leader == st.Leader {
				return st.Leader, lst, nil
			}
			if err != nil {
				lastErr = err
			}
		}
	}
	return 0, nil, fmt.Errorf("leader status: %w", lastErr)
}
