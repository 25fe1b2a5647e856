package etcdmember

import (
	"net"
	"net/url"
	"strconv"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// Member is one etcd cluster member as the member list shows it.
type Member struct {
	ID uint64
	// Name is empty until the member's etcd process has started and
	// joined (published its name).
	Name string
	// PeerURLs are where it serves raft peers.
	PeerURLs []string
	// ClientURLs are where it serves clients; empty until it has started.
	ClientURLs []string
	// IsLearner is true for a non-voting member.
	IsLearner bool
}

// Started reports whether the member's etcd process has started and joined
// the cluster: it has published its name and client URLs.
func (m Member) Started() bool { return m.Name != "" && len(m.ClientURLs) > 0 }

// fromPB copies the server's member list, skipping entries the server
// should never send (nil or ID 0).
func fromPB(in []*pb.Member) []Member {
	out := make([]Member, 0, len(in))
	for _, p := range in {
		if p == nil || p.ID == 0 {
			continue
		}
		out = append(out, Member{
			ID:         p.ID,
			Name:       p.Name,
			PeerURLs:   append([]string(nil), p.PeerURLs...),
			ClientURLs: append([]string(nil), p.ClientURLs...),
			IsLearner:  p.IsLearner,
		})
	}
	return out
}

// find returns the member with the given ID.
func find(members []Member, id uint64) (Member, bool) {
	for _, m := range members {
		if m.ID == id {
			return m, true
		}
	}
	return Member{}, false
}

// voters returns the voting members.
func voters(members []Member) []Member {
	var v []Member
	for _, m := range members {
		if !m.IsLearner {
			v = append(v, m)
		}
	}
	return v
}

// validatePeerURLs checks peer URLs the way etcd will (http or https,
// host:port, no path), before any RPC, and returns their canonical forms.
func validatePeerURLs(urls []string) ([]string, error) {
	if len(urls) == 0 {
		return nil, invalid("no peer URLs")
	}
	seen := map[string]bool{}
	out := make([]string, 0, len(urls))
	for _, s := range urls {
		c, err := canonURL(s)
		if err != nil {
			return nil, err
		}
		if seen[c] {
			return nil, invalid("peer URL %q given twice", s)
		}
		seen[c] = true
		out = append(out, c)
	}
	return out, nil
}

// canonURL validates one peer URL and returns it as scheme://host:port with
// the scheme and host in lower case, the form used to compare URLs.
func canonURL(s string) (string, error) {
	if strings.TrimSpace(s) != s {
		return "", invalid("peer URL %q: surrounding white space", s)
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", invalid("peer URL %q: %v", s, err)
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", invalid("peer URL %q: scheme must be http or https", s)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", invalid("peer URL %q: must be scheme://host:port only", s)
	}
	if u.Path != "" {
		return "", invalid("peer URL %q: must not have a path", s)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || host == "" {
		return "", invalid("peer URL %q: address must be host:port", s)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return "", invalid("peer URL %q: bad port %q", s, port)
	}
	return scheme + "://" + net.JoinHostPort(strings.ToLower(host), port), nil
}

// sharesPeerURL reports whether m has one of the canonical URLs in want.
func sharesPeerURL(m Member, want []string) bool {
	for _, u := range m.PeerURLs {
		c, err := canonURL(u)
		if err != nil {
			continue // garbage from the server matches nothing
		}
		for _, w := range want {
			if c == w {
				return true
			}
		}
	}
	return false
}

// initialCluster builds the initial-cluster string the member id needs to
// start with initial-cluster-state=existing: every started member's name
// with each of its peer URLs, and the new member under name. Members that
// have not started (other learners, no name yet) are left out, as etcd
// expects.
func initialCluster(members []Member, id uint64, name string) string {
	var parts []string
	for _, m := range members {
		n := m.Name
		if m.ID == id {
			n = name
		}
		if n == "" {
			continue
		}
		for _, u := range m.PeerURLs {
			parts = append(parts, n+"="+u)
		}
	}
	return strings.Join(parts, ",")
}
