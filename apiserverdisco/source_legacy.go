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
}

func (t *legacyTable) reset(kvs []*mvccpb.KeyValue, s *sink) {
	if len(kvs) == 0 {
		s.notYetSet("the key does not exist")
		return
	}
	t.value(kvs[0].Value, s)
}

func (t *legacyTable) apply(evs []*clientv3.Event, s *sink) {
	last := evs[len(evs)-1]
	if last.Type == clientv3.EventTypeDelete {
		s.notYetSet("the key was deleted")
		return
	}
	t.value(last.Kv.Value, s)
}

func (t *legacyTable) value(v []byte, s *sink) {
	if len(bytes.TrimSpace(v)) == 0 {
		s.notYetSet("the key's value is empty")
		return
	}
	var list []string
	if err := json.Unmarshal(v, &list); err != nil {
		s.malformed(newMalformed(t.key, v, fmt.Errorf("not a JSON array of \"host:port\" strings: %w", err)))
		return
	}
	addrs := make([]string, 0, len(list))
	for _, entry := range list {
		addr, err := normalizeAddress(entry)
		if err != nil {
			s.malformed(newMalformed(t.key, []byte(entry), err))
			continue
		}
		addrs = append(addrs, addr)
	}
	if len(addrs) == 0 {
		s.notYetSet("the key holds no valid address")
		return
	}
	s.set(addrs)
}
