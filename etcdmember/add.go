package etcdmember

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// AddLearner makes sure a learner with the given name and peer URLs is in
// the cluster and returns it. It blocks until then, and is idempotent:
//
//   - It reads the member list first. A member that already has one of the
//     peer URLs is returned as it is, learner or voter, without adding
//     anything — unless it has started under another name, which is a
//     *ConflictError naming both.
//   - A started member with this name but other peer URLs is a
//     *ConflictError too, unless WithReplaceStaleMember was given: then it
//     is removed first (through Remove, without Force).
//   - Otherwise it sends MemberAddAsLearner. After any error it reads the
//     member list again and decides from that: "peer URLs already exist",
//     a timeout or a lost reply end with the member found by its peer URL.
//     "Too many learners" (the cluster's learner limit) waits with backoff
//     until a learner is promoted or removed, logging once per distinct
//     set of learners, and retries; so does etcd's strict reconfiguration
//     check ("unhealthy cluster" for a few seconds after a promotion).
//   - etcd drops a membership change proposed while another one is
//     pending (a concurrent add, promote or remove, e.g. by another node
//     joining at the same moment) and never answers it. So when the
//     reply has not come within 15 ms, it reads the member list every
//     15 ms while it waits, and once a list shows the learner added, or
//     shows another membership change applied and not this add, it stops
//     waiting for the reply and decides from the member list at once
//     (adding again if the add was dropped).
//
// name must be non-empty and must not contain ',', '=', white space or
// control characters (etcd learns it only when the member starts; it is
// used to detect conflicts and goes into Join's --initial-cluster).
// peerURLs must be http or https host:port URLs without a path, user,
// query or fragment (IPv6 literals, zones included, are fine); they are
// checked before any RPC and sent in canonical form (scheme and host in
// lower case). Bad input is an error wrapping ErrInvalidArgument that
// names it. Permanent errors (permission denied, an error the client
// library raises before sending) are returned at once. When ctx ends it
// returns an error wrapping ctx.Err() that says what it was waiting for.
// Safe for concurrent use.
func (m *Manager) AddLearner(ctx context.Context, name string, peerURLs []string) (_ Member, err error) {
	c, err := m.begin(ctx, "AddLearner")
	if err != nil {
		return Member{}, err
	}
	defer c.end(&err)
	mem, _, _, err := c.addLearner(ctx, name, peerURLs)
	return mem, err
}

// addLearner is AddLearner that also says whether this call added the
// member and returns the member list it decided from. A member counts as
// added by this call if it was absent from the list read before this
// call's MemberAddAsLearner and present after it, whether the RPC's reply
// arrived or not — and, when the reply did not arrive, only if it is still
// an unstarted learner: the caller has not started it yet, so a member
// found started (or a voter) is someone else's.
func (c *call) addLearner(ctx context.Context, name string, peerURLs []string) (Member, bool, []Member, error) {
	if err := validateName(name); err != nil {
		return Member{}, false, nil, err
	}
	urls, err := validatePeerURLs(peerURLs)
	if err != nil {
		return Member{}, false, nil, err
	}
	b, err := c.newRetry()
	if err != nil {
		return Member{}, false, nil, err
	}
	what := fmt.Sprintf("add learner %q %v", name, urls)
	log := &stateLog{log: c.log.WithValues("name", name, "peerURLs", urls)}
	// ambiguous: a MemberAddAsLearner of ours may have been applied
	// although its reply said otherwise (timeout, lost connection).
	ambiguous := false
	pending := "reading the member list"
	for {
		if ctx.Err() != nil {
			return Member{}, false, nil, canceled(ctx, what, pending)
		}
		members, ok, err := c.listOrWait(ctx, b, log, what, &pending)
		if err != nil {
			return Member{}, false, nil, err
		}
		if !ok {
			continue
		}
		if existing, ok := byPeerURL(members, urls); ok {
			if existing.Name != "" && existing.Name != name {
				return Member{}, false, members, &ConflictError{Name: name, PeerURLs: urls, Existing: existing, SameURL: true}
			}
			// After an ambiguous add, only an unstarted learner can be
			// this call's: nothing has started the member yet.
			added := ambiguous && !existing.Started() && existing.IsLearner
			if !added {
				log.info("exists", "member already in the cluster", "id", hex(existing.ID), "learner", existing.IsLearner)
			}
			return existing, added, members, nil
		}
		if stale, ok := byName(members, name); ok {
			if !c.m.opt.replaceStale {
				return Member{}, false, members, &ConflictError{Name: name, PeerURLs: urls, Existing: stale}
			}
			log.info("replace-stale", "removing stale member with the same name", "id", hex(stale.ID), "stalePeerURLs", stale.PeerURLs)
			if _, err := c.remove(ctx, stale.ID, RemoveOptions{}); err != nil {
				return Member{}, false, members, fmt.Errorf("etcdmember: %s: replacing stale member %x: %w", what, stale.ID, err)
			}
			continue
		}

		// Not there: add it.
		var resp *pb.MemberAddResponse
		added := func(ms []Member) bool { _, ok := byPeerURL(ms, urls); return ok }
		err = c.change(ctx, addCheck, members, added, func(ctx context.Context, cc pb.ClusterClient) error {
			var err error
			resp, err = cc.MemberAdd(ctx, &pb.MemberAddRequest{PeerURLs: urls, IsLearner: true}, failFast)
			return err
		})
		if err == nil && resp != nil && resp.Member != nil && resp.Member.ID != 0 {
			added := fromPB(resp.Members)
			mem, ok := find(added, resp.Member.ID)
			if !ok {
				mem = fromPB([]*pb.Member{resp.Member})[0]
				added = append(added, mem)
			}
			log.info("added", "added learner", "id", hex(mem.ID))
			return mem, true, added, nil
		}
		if err == nil {
			err = status.Errorf(codes.Internal, "malformed MemberAdd response: %v", resp)
		}
		k := classify(ctx, err)
		switch k {
		case kindPermanent, kindCanceled:
			return Member{}, false, nil, stop(ctx, k, what, pending, err)
		case kindPeerURLExists:
			// Someone (perhaps our own earlier, timed-out request) added
			// it: the next member list names it.
			pending = "re-reading the member list after \"peer URL exists\""
			log.info("peer-url-exists", "etcd says the peer URL exists; re-reading the member list")
		case kindTooManyLearners:
			ls := learnerIDs(members)
			pending = fmt.Sprintf("waiting for a free learner slot (learners: %s)", ls)
			log.info("too-many-learners "+ls, "the cluster's learner limit is reached; waiting for a learner to be promoted or removed", "learners", ls)
		case kindMemberNotFound:
			// etcd derives a new member's ID from its peer URLs and the
			// current second: re-adding the peer URLs of a member removed
			// within the same second hits the removed ID. Not applied;
			// the next second gives a new ID.
			pending = fmt.Sprintf("adding the learner (etcd: %v)", err)
			log.info("id-removed", "etcd refused the add (the member ID derived from these peer URLs was just removed); retrying", "err", err)
		case kindReconfigRefused:
			// etcd's strict reconfiguration check refused before
			// proposing anything (e.g. the leader has not been connected
			// to every voter for five seconds after a promotion).
			pending = fmt.Sprintf("waiting for etcd to accept a membership change (%v)", err)
			log.info("reconfig-refused", "etcd refused the membership change for now; waiting", "err", err)
		default:
			ambiguous = true
			pending = fmt.Sprintf("adding the learner (last error: %v)", err)
			if errors.Is(err, errUnanswered) {
				// The member list decided (made, or dropped by etcd for a
				// concurrent change): read it again at once.
				log.log.V(1).Info("no reply to the add; re-reading the member list", "err", err)
				continue
			}
			log.info("add-error "+k.String(), "adding the learner failed; re-reading the member list", "err", err)
		}
		if err := c.wait(ctx, b, what, pending); err != nil {
			return Member{}, false, nil, err
		}
	}
}

// byPeerURL finds a member with one of the canonical URLs.
func byPeerURL(members []Member, urls []string) (Member, bool) {
	for _, m := range members {
		if sharesPeerURL(m, urls) {
			return m, true
		}
	}
	return Member{}, false
}

// byName finds a started member with the given name.
func byName(members []Member, name string) (Member, bool) {
	for _, m := range members {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

// learnerIDs lists the learners' IDs, sorted, as a state key and for logs.
func learnerIDs(members []Member) string {
	var ids []string
	for _, m := range members {
		if m.IsLearner {
			ids = append(ids, hex(m.ID))
		}
	}
	sort.Strings(ids)
	return "[" + strings.Join(ids, " ") + "]"
}

// hex formats a member ID the way etcd does.
func hex(id uint64) string { return fmt.Sprintf("%x", id) }
