package apiserverdisco

import (
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// prefixTable holds the addresses published under a prefix, one key per
// server.
type prefixTable struct {
	prefix string
	addrs  map[string]string // key → normalized address
	// reported holds the ModRevision of each malformed value reported and
	// still in place, so that a re-list does not report it again.
	reported map[string]int64
}

// report reports a malformed value once per key and ModRevision.
func (t *prefixTable) report(bad *MalformedValueError, modRev int64, s *sink) {
	if t.reported[bad.Key] == modRev {
		return
	}
	t.reported[bad.Key] = modRev
	s.malformed(bad)
}

// parse reads one key-value pair: the key's last element must be a valid
// server ID, the value an address record.
func (t *prefixTable) parse(kv *mvccpb.KeyValue) (string, *MalformedValueError) {
	key := string(kv.Key)
	if err := validateID(strings.TrimPrefix(key, t.prefix)); err != nil {
		return "", newMalformed(key, kv.Value, fmt.Errorf("the key's last element is not a server ID: %w", err))
	}
	addr, err := decodeRecord(kv.Value)
	if err != nil {
		return "", newMalformed(key, kv.Value, err)
	}
	return addr, nil
}

func (t *prefixTable) reset(kvs []*mvccpb.KeyValue, s *sink) {
	next := make(map[string]string, len(kvs))
	old := t.reported
	t.reported = make(map[string]int64)
	for _, kv := range kvs {
		addr, bad := t.parse(kv)
		if bad != nil {
			if rev, ok := old[bad.Key]; ok {
				t.reported[bad.Key] = rev
			}
			t.report(bad, kv.ModRevision, s)
			if old, ok := t.addrs[bad.Key]; ok {
				next[bad.Key] = old
			}
			continue
		}
		next[string(kv.Key)] = addr
	}
	t.addrs = next
	if len(next) == 0 {
		s.notYetSet("no address under the prefix")
		return
	}
	s.set(t.values())
}

func (t *prefixTable) apply(evs []*clientv3.Event, s *sink) {
	for _, ev := range evs {
		key := string(ev.Kv.Key)
		switch ev.Type {
		case clientv3.EventTypeDelete:
			delete(t.addrs, key)
			delete(t.reported, key)
		case clientv3.EventTypePut:
			addr, bad := t.parse(ev.Kv)
			if bad != nil {
				t.report(bad, ev.Kv.ModRevision, s)
				continue
			}
			t.addrs[key] = addr
			delete(t.reported, key)
		}
	}
	// Seen through the watch: an empty result is real (every key deleted
	// or expired), not a failure.
	s.set(t.values())
}

func (t *prefixTable) values() []string {
	out := make([]string, 0, len(t.addrs))
	for _, a := range t.addrs {
		out = append(out, a)
	}
	return out
}
