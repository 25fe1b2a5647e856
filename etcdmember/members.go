package etcdmember

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

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

// validateName checks a member name before any RPC: it goes into
// --initial-cluster ("name=url,name=url"), so it must be non-empty and
// free of ',', '=', white space and control characters, and valid UTF-8.
func validateName(name string) error {
	switch {
	case name == "":
		return invalid("empty member name")
	case !utf8.ValidString(name):
		return invalid("member name %q: not valid UTF-8", name)
	case strings.ContainsAny(name, ",="):
		return invalid("member name %q: must not contain ',' or '=' (they separate --initial-cluster entries)", name)
	}
	for _, r := range name {
		if unicode.IsSpace(r) || unicode.IsControl(r) || !unicode.IsPrint(r) {
			return invalid("member name %q: must not contain white space or control characters", name)
		}
	}
	return nil
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
// the scheme and host in lower case (an IPv6 zone keeps its case: interface
// names are case-sensitive), the form used to compare URLs and sent to
// etcd. Every URL it accepts is one that url.Parse and etcd's
// types.NewURLs accept, that fits in --initial-cluster (no ','), and whose
// canonical form canonicalizes to itself.
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
	if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Opaque != "" {
		return "", invalid("peer URL %q: must be scheme://host:port only", s)
	}
	if u.Path != "" || u.RawPath != "" {
		return "", invalid("peer URL %q: must not have a path", s)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || host == "" {
		return "", invalid("peer URL %q: address must be host:port", s)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 || port != strconv.Itoa(p) {
		return "", invalid("peer URL %q: bad port %q", s, port)
	}
	addr, zone, zoned := strings.Cut(host, "%")
	host = strings.ToLower(addr)
	if zoned {
		if zone == "" {
			return "", invalid("peer URL %q: empty IPv6 zone", s)
		}
		host += "%" + zone
	}
	// url.URL.String escapes what the host needs (an IPv6 zone's '%' as
	// %25), so the result parses back to the same host.
	out := (&url.URL{Scheme: scheme, Host: net.JoinHostPort(host, port)}).String()
	if strings.ContainsAny(out, ", \t\r\n") {
		return "", invalid("peer URL %q: must not contain ',' or white space (it goes into --initial-cluster)", s)
	}
	if back, err := url.Parse(out); err != nil || back.Host != net.JoinHostPort(host, port) {
		return "", invalid("peer URL %q: its canonical form does not parse back to the same host", s)
	}
	return out, nil
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
// start with initial-cluster-state=existing. etcd (membership.
// ValidateClusterAndAssignIDs) requires it to list every member the
// cluster has — unstarted learners and voters included — and matches them
// by peer URLs; only the new member's own name must be right. So it lists
// every member: the new one under name, started members under their names,
// and every other member (unstarted, or whose name is taken or cannot go
// into the string) under a unique placeholder "unstarted-<id>".
func initialCluster(members []Member, id uint64, name string) string {
	used := map[string]bool{name: true}
	names := make(map[uint64]string, len(members))
	// Real names first, so that a placeholder never takes a member's name.
	for _, m := range members {
		if m.ID == id || m.Name == "" || used[m.Name] || validateName(m.Name) != nil {
			continue
		}
		used[m.Name] = true
		names[m.ID] = m.Name
	}
	var parts []string
	for _, m := range members {
		n, ok := names[m.ID]
		switch {
		case m.ID == id:
			n = name
		case !ok:
			n = "unstarted-" + hex(m.ID)
			for i := 2; used[n]; i++ {
				n = fmt.Sprintf("unstarted-%s-%d", hex(m.ID), i)
			}
			used[n] = true
		}
		for _, u := range m.PeerURLs {
			parts = append(parts, n+"="+u) // as etcd has them
		}
	}
	return strings.Join(parts, ",")
}
