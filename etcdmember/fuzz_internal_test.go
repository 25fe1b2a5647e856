package etcdmember

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.etcd.io/etcd/client/pkg/v3/types"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// FuzzPeerURLs: peer URL and member name validation and canonicalization
// never panic; an accepted URL canonicalizes to one that etcd's
// types.NewURLs accepts, idempotently; an accepted name and URL make an
// --initial-cluster string that etcd's types.NewURLsMap parses back to
// every member, the new one under its name. The seed corpus runs under
// plain go test.
func FuzzPeerURLs(f *testing.F) {
	for _, seed := range []struct{ url, name string }{
		{"http://127.0.0.1:2380", "m1"},
		{"HTTPS://Node-1.Example:2380", "node-1"},
		{"http://[fe80::1%25lo]:2380", "zoned"},
		{"http://[FE80::1%25LO]:2380", "ZONED"},
		{"http://[::1]:2380", "v6"},
		{"http://[fe80::1%25]:2380", "emptyzone"},
		{"http://[fe80::1%25L,O]:1", "comma-zone"},
		{"http://a,b:1", "a,b"},
		{"http://a=b:1", "a=b"},
		{"http://h:2380/x", "a b"},
		{"http://h:02380", "x\x00"},
		{"http://%C3%A9:1", "é"},
		{"http://h:2380?", "q"},
		{"http://h:2380#", "f"},
		{"unix://h:1", "u"},
		{"http://:1", ""},
		{"http://h:1 ", "\xff"},
		{"http://[::1%25%2F]:1", "slash-zone"},
	} {
		f.Add(seed.url, seed.name)
	}
	f.Fuzz(func(t *testing.T, raw, name string) {
		c, err := canonURL(raw)
		if err != nil {
			if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), fmt.Sprintf("%q", raw)) {
				t.Fatalf("canonURL(%q): %v does not wrap ErrInvalidArgument naming the URL", raw, err)
			}
		} else {
			if _, err := types.NewURLs([]string{c}); err != nil {
				t.Fatalf("canonURL(%q) = %q, which etcd refuses: %v", raw, c, err)
			}
			if _, err := types.NewURLs([]string{raw}); err != nil {
				t.Fatalf("canonURL accepted %q, which etcd refuses: %v", raw, err)
			}
			again, err := canonURL(c)
			if err != nil || again != c {
				t.Fatalf("canonURL(%q) = %q, but canonURL(%q) = %q, %v", raw, c, c, again, err)
			}
		}
		nerr := validateName(name)
		if nerr != nil {
			if !errors.Is(nerr, ErrInvalidArgument) {
				t.Fatalf("validateName(%q): %v does not wrap ErrInvalidArgument", name, nerr)
			}
			if name != "" && !strings.Contains(nerr.Error(), fmt.Sprintf("%q", name)) {
				t.Fatalf("validateName(%q): %v does not name it", name, nerr)
			}
		}
		if err != nil || nerr != nil || c == "http://127.0.0.1:2380" || c == "http://127.0.0.1:2381" {
			return
		}
		members := []Member{
			{ID: 1, Name: "m0", PeerURLs: []string{"http://127.0.0.1:2380"}, ClientURLs: []string{"http://127.0.0.1:2379"}},
			{ID: 2, PeerURLs: []string{"http://127.0.0.1:2381"}, IsLearner: true}, // another, unstarted
			{ID: 3, PeerURLs: []string{c}, IsLearner: true},
		}
		ic := initialCluster(members, 3, name)
		m, perr := types.NewURLsMap(ic)
		if perr != nil {
			t.Fatalf("initial cluster %q for name %q: etcd cannot parse it: %v", ic, name, perr)
		}
		if len(m) != len(members) {
			t.Fatalf("initial cluster %q: %d members, want %d", ic, len(m), len(members))
		}
		if got := m[name]; len(got) != 1 || got[0].String() != c {
			t.Fatalf("initial cluster %q: member %q has %v, want [%s]", ic, name, got, c)
		}
	})
}

// TestClientSideErrorsPermanent: an error the client library raises before
// sending anything (here: a peer URL clientv3 rejects locally) is
// permanent, not retried until the deadline.
func TestClientSideErrorsPermanent(t *testing.T) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://127.0.0.1:1"}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	_, err = cli.MemberAddAsLearner(ctx, []string{"http://[fe80::1%lo]:2380"}) // what the old canonicalizer produced
	if err == nil {
		t.Fatal("clientv3 accepted an invalid URL")
	}
	if k := classify(ctx, err); k != kindPermanent {
		t.Fatalf("classify(%v) = %s, want permanent", err, k)
	}
	if k := classify(ctx, fmt.Errorf("list members: %w", err)); k != kindPermanent {
		t.Fatalf("wrapped: %s, want permanent", k)
	}
}
