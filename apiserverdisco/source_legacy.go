package apiserverdisco

import (
	"bytes"
	"encoding/json"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// legacyTable reads the k3s/RKE2 "<program>/apiaddresses" key: a JSON
// array of "host:port".
type legacyTable struct {
	key string
	// reported is the ModRevision of the malformed value last reported, so
	// that a re-list of the same value does not report it again.
	reported int64
}

func (t *legacyTable) reset(kvs []*mvccpb.KeyValue, s *sink) {
	if len(kvs) == 0 {
		s.notYetSet("the key does not exist")
		return
	}
	t.value(kvs[0], s)
}

func (t *legacyTable) apply(evs []*clientv3.Event, s *sink) {
	last := evs[len(evs)-1]
	if last.Type == clientv3.EventTypeDelete {
		s.notYetSet("the key was deleted")
		return
	}
	t.value(last.Kv, s)
}

func (t *legacyTable) value(kv *mvccpb.KeyValue, s *sink) {
	addrs, bad, notYet := decodeLegacy(t.key, kv.Value)
	if bad != nil && kv.ModRevision != t.reported {
		t.reported = kv.ModRevision
		s.malformed(bad)
	}
	if notYet != "" {
		s.notYetSet(notYet)
		return
	}
	s.set(addrs)
}

// decodeLegacy parses a value of the legacy key: a JSON array of
// "host:port" strings, as k3s writes it (with or without its trailing
// newline). It returns the valid addresses in canonical form, in the order
// of the array; one error for the whole value (not JSON, or invalid
// entries: all counted, the first MaxReportedEntries listed), or nil; and,
// when there is no valid address, why the value means "not yet set".
func decodeLegacy(key string, v []byte) (addrs []string, bad *MalformedValueError, notYet string) {
	if len(bytes.TrimSpace(v)) == 0 {
		return nil, nil, "the key's value is empty"
	}
	var list []string
	if err := json.Unmarshal(v, &list); err != nil {
		return nil, newMalformed(key, v, fmt.Errorf("not a JSON array of \"host:port\" strings: %w", err)),
			"the key's value is not a JSON array of \"host:port\" strings"
	}
	var b badEntries
	addrs = make([]string, 0, len(list))
	for _, entry := range list {
		addr, err := normalizeAddress(entry)
		if err != nil {
			b.add(entry, err)
			continue
		}
		addrs = append(addrs, addr)
	}
	bad = b.malformed(key, string(v), len(list))
	if len(addrs) == 0 {
		return nil, bad, "the key holds no valid address"
	}
	return addrs, bad, ""
}

// encodeLegacy encodes addresses exactly as k3s writes the legacy key:
// json.NewEncoder(&buf).Encode(addresses), a JSON array with a trailing
// newline.
func encodeLegacy(addrs []string) []byte {
	var buf bytes.Buffer
	_ = json.NewEncoder(&buf).Encode(addrs) // cannot fail: a []string
	return buf.Bytes()
}
