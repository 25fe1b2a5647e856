package apiserverdisco

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// EtcdPrefix is the Source of addresses published with Publish: every key
// under prefix ("" means DefaultPrefix; a missing trailing '/' is added),
// one per apiserver, each gone when its lease expires. The watcher lists
// the prefix at a revision, then watches from the next revision (no gap,
// no duplicate), with etcd's require-leader flag so that a member cut off
// from its cluster fails the watch instead of leaving it silent. After a
// compaction or a cancelled watch it lists again; while etcd is
// unavailable it retries with backoff. A list that finds no keys is "not
// yet set"; only deletions and expiries seen through the watch can empty
// the set. Values that do not parse are skipped and reported (the key's
// last good address, if any, is kept).
//
// The client is not closed by the Watcher; if it is closed, the Watcher
// stops with an error saying so.
func EtcdPrefix(client *clientv3.Client, prefix string) Source {
	p, err := cleanPrefix(prefix)
	name := fmt.Sprintf("etcd prefix %q", p)
	if err == nil {
		err = checkEtcdClient(client, "EtcdPrefix", false)
	}
	if err != nil {
		return Source{name: name, err: err}
	}
	es := &etcdSource{client: client, name: name, key: p, prefix: true}
	return Source{name: name, run: func(ctx context.Context, s *sink) error {
		return es.run(ctx, s, &prefixTable{prefix: p, addrs: map[string]string{}, reported: map[string]int64{}})
	}}
}

// LegacyKey is the Source of the key k3s and RKE2 keep today,
// "<program>/apiaddresses" (program "k3s" or "rke2"), so a running cluster
// can be read as it is: a JSON array of "host:port" strings written by a
// leader-elected controller, without a lease. It is read and watched like
// EtcdPrefix. An empty value (what a cluster reset writes), an empty array,
// a missing key or a value that does not parse mean "not yet set" and keep
// the last good set, as k3s does since v1.32.3; invalid entries are
// skipped and reported, the valid ones used. This source therefore never
// delivers an empty set.
func LegacyKey(client *clientv3.Client, program string) Source {
	key := program + "/apiaddresses"
	name := fmt.Sprintf("etcd key %q", key)
	if err := checkProgram(program, "LegacyKey"); err != nil {
		return Source{name: name, err: err}
	}
	if err := checkEtcdClient(client, "LegacyKey", false); err != nil {
		return Source{name: name, err: err}
	}
	es := &etcdSource{client: client, name: name, key: key}
	return Source{name: name, legacyKey: key, run: func(ctx context.Context, s *sink) error {
		return es.run(ctx, s, &legacyTable{key: key})
	}}
}

// checkProgram validates the program of a legacy key.
func checkProgram(program, call string) error {
	if program == "" || strings.ContainsAny(program, "/ \t\r\n") {
		return invalidInput("apiserverdisco: %s: program %q must be a non-empty name such as \"rke2\" or \"k3s\"", call, program)
	}
	return nil
}

// checkEtcdClient refuses a nil client and one that would panic on first
// use: not made by clientv3.New (no context), or with a nil KV or Watcher
// (and Lease, if lease) interface, typed nils included.
func checkEtcdClient(c *clientv3.Client, call string, lease bool) error {
	switch {
	case c == nil:
		return invalidInput("apiserverdisco: %s: client is a nil etcd client (*clientv3.Client)", call)
	case isNil(c.Ctx()):
		return invalidInput("apiserverdisco: %s: client has no context: not made by clientv3.New", call)
	case isNil(c.KV):
		return invalidInput("apiserverdisco: %s: client.KV is nil (%T)", call, c.KV)
	case isNil(c.Watcher):
		return invalidInput("apiserverdisco: %s: client.Watcher is nil (%T)", call, c.Watcher)
	case lease && isNil(c.Lease):
		return invalidInput("apiserverdisco: %s: client.Lease is nil (%T)", call, c.Lease)
	}
	return nil
}

// etcdTable turns what etcd returns for one key or prefix into a set of
// addresses, keeping state across a list and the watch that follows.
type etcdTable interface {
	// reset replaces the state with a list result and reports it.
	reset(kvs []*mvccpb.KeyValue, s *sink)
	// apply applies one watch response's events and reports the result.
	apply(evs []*clientv3.Event, s *sink)
}

// etcdSource is the list-then-watch loop shared by EtcdPrefix and
// LegacyKey.
type etcdSource struct {
	client *clientv3.Client
	name   string
	key    string
	prefix bool
}

var errClientClosed = errors.New("the etcd client was closed")

// run lists and watches until ctx ends. A failed list, or a watch that
// ended before it was established, waits for the next backoff delay; a
// watch that was established and then ended (compaction, cancellation, a
// lost leader) re-lists at once, and its backoff starts over. A panic in
// the client (a KV or Watcher implementation of the caller's) fails that
// list or watch like any other error.
func (e *etcdSource) run(ctx context.Context, s *sink, t etcdTable) error {
	b := s.newRetrier()
	retry := func(err error) bool {
		d := b.next()
		s.failed(fmt.Errorf("apiserverdisco: %s: %w", e.name, err), classify(err), d.String())
		return sleepCtx(ctx, d) == nil
	}
	for {
		if ctx.Err() != nil {
			return nil
		}
		if e.client.Ctx().Err() != nil {
			return fmt.Errorf("apiserverdisco: %s: %w", e.name, errClientClosed)
		}
		var rev int64
		err := protect("the etcd client (list)", func() (err error) {
			rev, err = e.list(ctx, s, t)
			return err
		})
		if err != nil {
			if ctx.Err() != nil || !retry(fmt.Errorf("list: %w", err)) {
				return nil
			}
			continue
		}
		var established bool
		err = protect("the etcd client (watch)", func() (err error) {
			established, err = e.watch(ctx, s, t, rev)
			return err
		})
		switch {
		case ctx.Err() != nil:
			return nil
		case established:
			b.reset()
			if classify(err) == compacted {
				s.log.Info("watch fell behind a compaction; listing again", "fromRevision", rev+1)
			} else {
				s.log.Info("watch ended; listing again", "reason", err.Error())
			}
		default:
			if !retry(fmt.Errorf("watch from revision %d: %w", rev+1, err)) {
				return nil
			}
		}
	}
}

func (e *etcdSource) opts(extra ...clientv3.OpOption) []clientv3.OpOption {
	if e.prefix {
		extra = append(extra, clientv3.WithPrefix())
	}
	return extra
}

// list reads the current state and returns its revision.
func (e *etcdSource) list(ctx context.Context, s *sink, t etcdTable) (int64, error) {
	ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), s.o.requestTimeout)
	defer cancel()
	resp, err := e.client.Get(ctx, e.key, e.opts()...)
	if err != nil {
		return 0, err
	}
	t.reset(resp.Kvs, s)
	return resp.Header.Revision, nil
}

// watch follows changes from rev+1 until the watch ends, and reports
// whether the server had established it and why it ended.
func (e *etcdSource) watch(ctx context.Context, s *sink, t etcdTable, rev int64) (established bool, err error) {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := e.client.Watch(ctx, e.key, e.opts(clientv3.WithRev(rev+1), clientv3.WithCreatedNotify())...)
	for resp := range wch {
		if err := resp.Err(); err != nil {
			return established, err
		}
		if resp.Canceled {
			return established, errors.New("watch canceled by the server")
		}
		if resp.Created {
			established = true
		}
		if len(resp.Events) > 0 {
			t.apply(resp.Events, s)
		}
	}
	if e.client.Ctx().Err() != nil {
		return established, errClientClosed
	}
	return established, errors.New("watch channel closed")
}
