package apiserverdisco

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// LegacyWriterElectionPrefix is where LegacyKeyWriters of one program
// campaign: the election of program p uses the keys under
// LegacyWriterElectionPrefix + p + "/", one per candidate, each attached to
// that candidate's lease and holding its id — the layout of
// concurrency.NewElection(session, LegacyWriterElectionPrefix+p), so
// Election.Leader and Observe on that name show which node writes.
//
// A key there is a candidate only if it is attached to a lease, is named
// by that lease's ID in hex, and holds a valid ID: anything else can
// never go away by itself, or was not written by a campaign. LegacyKey
// writers ignore such keys, so garbage there never stalls the election;
// each is reported once (a *MalformedValueError naming the key, through
// WithErrorHandler and the logger) until it changes. Delete them:
// concurrency's Election.Leader and Observe do not ignore them. A leader
// whose own key stops being a candidate's (deleted, or put over by
// someone else) stops leading at once.
const LegacyWriterElectionPrefix = "/kubeboot/apiaddresses-writer/"

// ErrLegacyKeyOverwritten is wrapped by the error a LegacyKeyWriter
// reports (WithErrorHandler, the logger) when, while it leads, something
// else writes a different value to the legacy key: most likely k3s's or
// RKE2's own apiaddresses controller, which must not run next to it. The
// writer puts its value back after the next backoff delay.
var ErrLegacyKeyOverwritten = errors.New("apiserverdisco: the legacy apiaddresses key was overwritten by another writer")

// LegacyKeyWriter keeps the k3s/RKE2 key "<program>/apiaddresses" equal to
// the live address set of a Source, byte for byte as k3s writes it: the
// JSON array of "host:port" strings that json.NewEncoder(...).Encode
// produces, with its trailing newline (here sorted, in canonical form, for
// example "[\"10.0.0.1:6443\",\"10.0.0.2:6443\"]\n"). So unmodified k3s and
// RKE2 agents and servers, which read the key with
// GetAPIServerURLsFromETCD, find the addresses kubeboot publishes.
//
// It replaces k3s's own apiaddresses controller (pkg/etcd, which rewrites
// the key from the "kubernetes" Service's EndpointSlices on every change):
// only one writer may own the key, and the two would overwrite each other.
// Run it where that controller does not run; if something else writes the
// key anyway, the writer reports an error wrapping ErrLegacyKeyOverwritten
// and puts its value back after the next backoff delay.
//
// Writers on several nodes do not fight: they campaign in an etcd election
// (go.etcd.io/etcd/client/v3/concurrency, under
// LegacyWriterElectionPrefix), each on a lease of its own (WithTTL, default
// DefaultTTL), and only the leader writes, each write a transaction that
// succeeds only while its election key is still its own (not deleted, not
// put over by someone else); a leader whose key changes stops leading at
// once. Keys under the election prefix that no campaign wrote are
// ignored and reported (see LegacyWriterElectionPrefix). When the leader
// closes, it resigns and the next candidate takes over at once; when it
// dies or is cut off, its lease expires within the TTL and the next takes
// over then, while the old one can no longer write.
//
// It never writes an empty list, and never a list over the key while the
// source has not delivered a non-empty set: a source that goes empty, is
// not yet set or cannot be read leaves the last good value in place. It
// writes only when the value differs from what the key holds.
//
// It runs its own goroutines (a Watcher of the source, the campaign, the
// writes) from StartLegacyKeyWriter until its context ends or Close
// returns. Its methods are safe for concurrent use.
type LegacyKeyWriter struct {
	client   *clientv3.Client
	key      string
	id       string
	election string
	o        options
	log      logr.Logger
	watcher  *Watcher
	cleanup  context.Context // the start context without its cancellation

	cancel context.CancelCauseFunc
	done   chan struct{}

	mu      sync.Mutex
	leader  bool
	written []string
	err     error

	closeOnce sync.Once

	garbage map[string]int64 // election keys reported as not a candidate's → their ModRevision; used by run's goroutine only
}

// StartLegacyKeyWriter starts a LegacyKeyWriter for program ("k3s" or
// "rke2": the key "<program>/apiaddresses") that writes the sets src
// delivers, campaigning as id (a node name, validated like a Publish ID).
// It returns at once; the writer campaigns and writes in the background
// (Leader says whether it leads). Options: WithTTL (the election lease),
// WithDebounce (of its Watcher), WithBackoff, WithErrorHandler,
// WithLogger, WithRequestTimeout.
//
// ctx bounds the writer's life: when it ends, the writer stops writing and
// its election lease expires within the TTL (Close resigns at once). The
// key is never deleted: the last value written stays for the readers.
//
// Bad input — a nil ctx, a nil client or one not made by clientv3.New, a
// bad program or id, the zero Source, a Source with bad input, a LegacyKey
// source of the same key (the writer would read its own writes), a bad
// option — returns an error wrapping ErrInvalidInput and naming the
// argument, before anything is started or written.
func StartLegacyKeyWriter(ctx context.Context, client *clientv3.Client, program, id string, src Source, opts ...Option) (*LegacyKeyWriter, error) {
	const call = "StartLegacyKeyWriter"
	if err := checkContext(ctx, call); err != nil {
		return nil, err
	}
	if err := checkEtcdClient(client, call, true); err != nil {
		return nil, err
	}
	if err := checkProgram(program, call); err != nil {
		return nil, err
	}
	if err := validateID(id); err != nil {
		return nil, invalidInput("apiserverdisco: %s: id: %w", call, err)
	}
	key := program + "/apiaddresses"
	switch {
	case src.run == nil && src.err == nil:
		return nil, invalidInput("apiserverdisco: %s: src is the zero Source; use EtcdPrefix or EndpointSlices", call)
	case src.err != nil:
		return nil, src.err
	case src.legacyKey == key:
		return nil, invalidInput("apiserverdisco: %s: src reads %q, the key it would write", call, key)
	}
	o, log, err := buildOptions(ctx, forLegacyWriter, opts)
	if err != nil {
		return nil, err
	}
	wopts := []Option{WithDebounce(o.debounce), WithBackoff(o.newBackoff), WithRequestTimeout(o.requestTimeout), WithLogger(o.base)}
	if o.onError != nil {
		// Through the writer's reporter: one call at a time, panics
		// recovered.
		wopts = append(wopts, WithErrorHandler(o.rep.handle))
	}
	wctx, cancel := context.WithCancelCause(ctx)
	watcher, err := NewWatcher(wctx, src, wopts...)
	if err != nil {
		cancel(err)
		return nil, err
	}
	lw := &LegacyKeyWriter{
		client:   client,
		key:      key,
		id:       id,
		election: LegacyWriterElectionPrefix + program + "/",
		o:        o,
		log:      log.WithValues("key", key, "id", id),
		watcher:  watcher,
		cleanup:  context.WithoutCancel(ctx),
		cancel:   cancel,
		done:     make(chan struct{}),
		garbage:  map[string]int64{},
	}
	go lw.run(wctx)
	return lw, nil
}

// Key returns the key the writer keeps, "<program>/apiaddresses". It does
// not block; on a nil writer it returns "".
func (lw *LegacyKeyWriter) Key() string {
	if lw == nil {
		return ""
	}
	return lw.key
}

// Leader reports whether the writer leads the election now, so it is the
// one that writes. It does not block; on a nil writer it returns false.
func (lw *LegacyKeyWriter) Leader() bool {
	if lw.invalid() {
		return false
	}
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.leader
}

// Written returns the set this writer last wrote to the key (nil if it
// never wrote), in the order written. It does not block.
func (lw *LegacyKeyWriter) Written() []string {
	if lw.invalid() {
		return nil
	}
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return append([]string(nil), lw.written...)
}

// Done returns a channel closed once the writer has stopped and its
// goroutines have returned (already closed for a nil writer).
func (lw *LegacyKeyWriter) Done() <-chan struct{} {
	if lw.invalid() {
		return closedChan
	}
	return lw.done
}

// Err returns nil while the writer runs; once Done is closed, why it
// stopped: ErrClosed after Close, the context's cause, the reason its
// Watcher stopped (an etcd client that was closed), or a *PanicError. It
// does not block. For a nil writer it returns an error wrapping
// ErrInvalidInput.
func (lw *LegacyKeyWriter) Err() error {
	if lw.invalid() {
		return errNotAWriter
	}
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.err
}

// Close stops the writer and waits for its goroutines: if it leads, it
// resigns (the next candidate takes over at once) and revokes its
// election lease, under a fresh context bounded by the request timeout.
// The key keeps its last value. Close returns nil, may be called more than
// once and from several goroutines; on a nil writer it returns an error
// wrapping ErrInvalidInput.
func (lw *LegacyKeyWriter) Close() error {
	if lw.invalid() {
		return errNotAWriter
	}
	lw.closeOnce.Do(func() {
		lw.cancel(ErrClosed)
		<-lw.done
	})
	return nil
}

func (lw *LegacyKeyWriter) invalid() bool { return lw == nil || lw.done == nil }

var errNotAWriter = invalidInput("apiserverdisco: the LegacyKeyWriter is nil or was not made by StartLegacyKeyWriter")

func (lw *LegacyKeyWriter) setLeader(on bool) {
	lw.mu.Lock()
	lw.leader = on
	lw.mu.Unlock()
}

// run campaigns and leads, again and again, until ctx ends or the watcher
// stops. A panic (in the client's implementation) stops the writer with a
// *PanicError.
func (lw *LegacyKeyWriter) run(ctx context.Context) {
	defer close(lw.done)
	defer lw.watcher.Close()
	defer func() {
		stop := context.Cause(ctx)
		if v := recover(); v != nil {
			pe := newPanicError("the etcd client (legacy key writer)", v)
			lw.o.rep.panicked(pe)
			stop = pe
		} else if stop == nil {
			stop = lw.watcher.Err() // it stopped by itself
		}
		lw.mu.Lock()
		lw.leader = false
		if lw.err == nil {
			lw.err = stop
		}
		lw.mu.Unlock()
		lw.cancel(stop)
	}()
	b := newRetrier(lw.o.newBackoff, lw.o.rep.panicked)
	for ctx.Err() == nil && lw.watcher.Err() == nil {
		led, err := lw.term(ctx)
		if ctx.Err() != nil || lw.watcher.Err() != nil {
			return
		}
		if led {
			b.reset()
		}
		d := b.next()
		if err != nil {
			lw.log.Info("election term ended; campaigning again", "reason", err.Error(), "retryIn", d.String())
			lw.o.rep.handle(fmt.Errorf("apiserverdisco: legacy key writer %q for %q: %w", lw.id, lw.key, err))
		}
		if sleepCtx(ctx, d) != nil {
			return
		}
	}
}

// term is one session: grant a lease, campaign, lead until the lease is
// lost or ctx ends, then resign and revoke. It reports whether it led.
func (lw *LegacyKeyWriter) term(ctx context.Context) (led bool, err error) {
	gctx, cancel := context.WithTimeout(ctx, lw.o.requestTimeout)
	ttl := leaseSeconds(lw.o.ttl)
	g, err := lw.client.Grant(gctx, ttl)
	cancel()
	if err != nil {
		return false, fmt.Errorf("grant a %ds election lease: %w", ttl, err)
	}
	s, err := concurrency.NewSession(lw.client, concurrency.WithLease(g.ID), concurrency.WithContext(ctx))
	if err != nil {
		lw.revoke(g.ID)
		return false, fmt.Errorf("keep the election lease %x alive: %w", g.ID, err)
	}
	defer func() {
		s.Orphan()
		lw.revoke(g.ID)
	}()
	// The term ends when its lease is lost, whatever it is doing. A lost
	// lease also deletes the election key, so a new term starts afresh.
	tctx, tcancel := context.WithCancelCause(ctx)
	defer tcancel(nil)
	lost := make(chan struct{})
	go func() {
		defer close(lost)
		select {
		case <-s.Done():
			tcancel(fmt.Errorf("election lease %x lost", g.ID))
		case <-tctx.Done():
		}
	}()
	defer func() { tcancel(nil); <-lost }()

	lw.log.V(1).Info("campaigning", "election", lw.election, "lease", fmt.Sprintf("%x", g.ID))
	e, err := lw.campaign(tctx, s)
	if err != nil {
		if c := context.Cause(tctx); c != nil {
			return false, c
		}
		return false, fmt.Errorf("campaign: %w", err)
	}
	lw.setLeader(true)
	lw.log.Info("leading: this node writes the legacy key", "election", lw.election)
	err = lw.lead(tctx, e, s.Lease())
	lw.setLeader(false)
	rctx, rcancel := context.WithTimeout(lw.cleanup, lw.o.requestTimeout)
	defer rcancel()
	if rerr := e.Resign(rctx); rerr != nil {
		lw.log.V(1).Info("could not resign; the election lease will expire", "error", rerr.Error())
	}
	if c := context.Cause(tctx); err == nil && c != nil && ctx.Err() == nil {
		err = c
	}
	return true, err
}

// campaign enters the election exactly as concurrency.Election.Campaign
// does — a key <election prefix><lease ID in hex> holding the id, under the
// session's lease; the candidate with the lowest create revision leads —
// and blocks until this writer leads or ctx ends. Unlike Campaign, it does
// not clean up on cancellation with an unbounded request (Campaign resigns
// under the client's context, which hangs while etcd is unreachable): the
// caller revokes the lease, which deletes the key. Each request is bounded
// by the request timeout. It returns the Election resumed on its key.
func (lw *LegacyKeyWriter) campaign(ctx context.Context, s *concurrency.Session) (*concurrency.Election, error) {
	key := fmt.Sprintf("%s%x", lw.election, s.Lease())
	rctx, cancel := context.WithTimeout(ctx, lw.o.requestTimeout)
	resp, err := lw.client.Txn(rctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, lw.id, clientv3.WithLease(s.Lease()))).
		Else(clientv3.OpGet(key)).
		Commit()
	cancel()
	if err != nil {
		return nil, err
	}
	myRev := resp.Header.Revision
	if !resp.Succeeded {
		myRev = resp.Responses[0].GetResponseRange().Kvs[0].CreateRevision
	}
	for {
		// The newest candidate older than this one leads or waits before
		// it; once none is left, this one leads. Keys that are not a
		// candidate's are reported and skipped.
		rctx, cancel := context.WithTimeout(ctx, lw.o.requestTimeout)
		g, err := lw.client.Get(rctx, lw.election, clientv3.WithPrefix(),
			clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend), clientv3.WithMaxCreateRev(myRev-1))
		cancel()
		if err != nil {
			return nil, err
		}
		var before *mvccpb.KeyValue
		for _, kv := range g.Kvs {
			if why := lw.notCandidate(kv); why != "" {
				lw.reportGarbage(kv, why)
				continue
			}
			before = kv
			break
		}
		if before == nil {
			return concurrency.ResumeElection(s, lw.election, key, myRev), nil
		}
		lw.log.V(1).Info("waiting for the candidate before this one", "candidate", string(before.Key), "candidateID", cut(string(before.Value)))
		if err := lw.awaitGone(ctx, string(before.Key), g.Header.Revision); err != nil {
			return nil, err
		}
	}
}

// notCandidate says why kv, a key under the election prefix, is not a
// candidate's, or "" if it is one: attached to a lease, named by that
// lease's ID in hex (as concurrency.Election.Campaign names it), and
// holding a valid ID.
func (lw *LegacyKeyWriter) notCandidate(kv *mvccpb.KeyValue) string {
	switch {
	case kv.Lease == 0:
		return "it is attached to no lease, so it would never expire"
	case string(kv.Key) != fmt.Sprintf("%s%x", lw.election, kv.Lease):
		return fmt.Sprintf("its name is not its lease's ID (%x)", kv.Lease)
	case validateID(string(kv.Value)) != nil:
		return fmt.Sprintf("its value is not a valid ID: %v", validateID(string(kv.Value)))
	}
	return ""
}

// reportGarbage reports a key under the election prefix that is not a
// candidate's, once per version of the key.
func (lw *LegacyKeyWriter) reportGarbage(kv *mvccpb.KeyValue, why string) {
	key := string(kv.Key)
	if lw.garbage[key] == kv.ModRevision {
		return
	}
	lw.garbage[key] = kv.ModRevision
	err := newMalformed(key, kv.Value, fmt.Errorf("not a candidate of the LegacyKeyWriter election: %s; ignored (delete it)", why))
	lw.o.rep.problem(err, "ignoring a key under the election prefix that is not a candidate's", "key", key)
}

// awaitGone waits until key, a candidate's election key, is deleted after
// revision rev or stops being a candidate's (put over by someone else:
// the caller's next scan reports it), or ctx ends.
func (lw *LegacyKeyWriter) awaitGone(ctx context.Context, key string, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range lw.client.Watch(wctx, key, clientv3.WithRev(rev+1)) {
		if err := resp.Err(); err != nil {
			return err
		}
		for _, ev := range resp.Events {
			if ev.Type == clientv3.EventTypeDelete || lw.notCandidate(ev.Kv) != "" {
				return nil
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.New("the watch of the leader's election key ended")
}

// revoke revokes an election lease, best effort, under its own bounded
// context.
func (lw *LegacyKeyWriter) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(lw.cleanup, lw.o.requestTimeout)
	defer cancel()
	if _, err := lw.client.Revoke(ctx, id); err != nil && !isLeaseNotFound(err) {
		lw.log.V(1).Info("could not revoke the election lease; it will expire", "lease", fmt.Sprintf("%x", id), "error", err.Error())
	}
}

// errNotLeader ends a term whose election key is gone or is no longer
// this writer's candidate key.
var errNotLeader = errors.New("the election key is gone or was put over by someone else: no longer the leader")

// lead keeps the key equal to the watcher's set while this writer leads:
// it reads the key, follows it with a watch, and writes whenever the set
// (non-empty) and the key differ. It returns when ctx ends (the term is
// over), when its own election key is deleted or put over (seen by a
// watch, or by a write that finds it so), or when the watcher stops.
func (lw *LegacyKeyWriter) lead(ctx context.Context, e *concurrency.Election, lease clientv3.LeaseID) error {
	have, rev, err := lw.read(ctx)
	if err != nil {
		return err
	}
	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer wcancel()
	wch := lw.client.Watch(wctx, lw.key, clientv3.WithRev(rev+1))
	// The election key, from its creation on: any change to it ends the
	// term.
	ech := lw.client.Watch(wctx, e.Key(), clientv3.WithRev(e.Rev()+1))
	b := newRetrier(lw.o.newBackoff, lw.o.rep.panicked)
	var retry *time.Timer
	var retryC <-chan time.Time
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()
	later := func() {
		if retryC == nil {
			retry = time.NewTimer(b.next())
			retryC = retry.C
		}
	}
	var lastWrite int64  // revision of this writer's last write
	var emptySeen uint64 // the Version of the last empty set logged
	for {
		snap, changed := lw.watcher.current()
		if snap.Version > 0 && len(snap.Addresses) == 0 && snap.Version != emptySeen {
			emptySeen = snap.Version
			lw.log.V(1).Info("the live set is empty; not writing it: the key keeps its last good value", "version", snap.Version)
		}
		if want := snap.Addresses; len(want) > 0 && retryC == nil {
			value := encodeLegacy(want)
			if !bytes.Equal(value, have) {
				wrev, err := lw.write(ctx, e, lease, value)
				switch {
				case errors.Is(err, errNotLeader):
					return err
				case err != nil:
					if ctx.Err() != nil {
						return nil
					}
					lw.log.Info("writing the legacy key failed; retrying", "error", err.Error())
					lw.o.rep.handle(fmt.Errorf("apiserverdisco: write %q: %w", lw.key, err))
					later()
				default:
					have, lastWrite = value, wrev
					lw.mu.Lock()
					lw.written = want
					lw.mu.Unlock()
					lw.log.Info("wrote the legacy key", "addresses", want, "revision", wrev)
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-lw.watcher.Done():
			return nil
		case <-changed:
			b.reset()
		case <-retryC:
			retryC = nil
		case resp, ok := <-ech:
			if !ok || resp.Err() != nil || resp.Canceled {
				if ctx.Err() != nil {
					return nil
				}
				// Compacted or cut off: read the key, then watch on.
				erev, err := lw.checkOwnKey(ctx, e, lease)
				if err != nil {
					return err
				}
				ech = lw.client.Watch(wctx, e.Key(), clientv3.WithRev(erev+1))
				continue
			}
			for _, ev := range resp.Events {
				if ev.Type == clientv3.EventTypeDelete || !lw.ownKey(ev.Kv, e, lease) {
					return errNotLeader
				}
			}
		case resp, ok := <-wch:
			if !ok || resp.Err() != nil || resp.Canceled {
				if ctx.Err() != nil {
					return nil
				}
				if have, rev, err = lw.read(ctx); err != nil {
					return err
				}
				wch = lw.client.Watch(wctx, lw.key, clientv3.WithRev(rev+1))
				continue
			}
			for _, ev := range resp.Events {
				if ev.Kv.ModRevision == lastWrite {
					continue
				}
				have = nil
				if ev.Type == clientv3.EventTypePut {
					have = ev.Kv.Value
				}
				if snap, _ := lw.watcher.current(); len(snap.Addresses) == 0 || bytes.Equal(have, encodeLegacy(snap.Addresses)) {
					continue // nothing to put back
				}
				err := fmt.Errorf("%w: %q at revision %d (is k3s's or RKE2's own apiaddresses controller running?); putting it back",
					ErrLegacyKeyOverwritten, cut(string(have)), ev.Kv.ModRevision)
				lw.o.rep.problem(err, "the legacy key was changed by another writer", "key", lw.key)
				later()
			}
		}
	}
}

// read gets the key's value (nil if missing) and the revision.
func (lw *LegacyKeyWriter) read(ctx context.Context) ([]byte, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, lw.o.requestTimeout)
	defer cancel()
	resp, err := lw.client.Get(ctx, lw.key)
	if err != nil {
		return nil, 0, fmt.Errorf("read %q: %w", lw.key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, resp.Header.Revision, nil
	}
	return resp.Kvs[0].Value, resp.Header.Revision, nil
}

// ownKey reports whether kv is still this writer's candidate key: the
// same creation, attached to its lease, holding its id. Any other writer
// takes a key that is not for garbage (see notCandidate).
func (lw *LegacyKeyWriter) ownKey(kv *mvccpb.KeyValue, e *concurrency.Election, lease clientv3.LeaseID) bool {
	return kv.CreateRevision == e.Rev() && kv.Lease == int64(lease) && string(kv.Value) == lw.id
}

// checkOwnKey reads the election key: errNotLeader if it is no longer this
// writer's, else the revision read.
func (lw *LegacyKeyWriter) checkOwnKey(ctx context.Context, e *concurrency.Election, lease clientv3.LeaseID) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, lw.o.requestTimeout)
	defer cancel()
	resp, err := lw.client.Get(ctx, e.Key())
	if err != nil {
		return 0, fmt.Errorf("read the election key %q: %w", e.Key(), err)
	}
	if len(resp.Kvs) == 0 || !lw.ownKey(resp.Kvs[0], e, lease) {
		return 0, errNotLeader
	}
	return resp.Header.Revision, nil
}

// write puts value only while this writer's election key is still its
// candidate key (see ownKey).
func (lw *LegacyKeyWriter) write(ctx context.Context, e *concurrency.Election, lease clientv3.LeaseID, value []byte) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, lw.o.requestTimeout)
	defer cancel()
	resp, err := lw.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(e.Key()), "=", e.Rev()),
			clientv3.Compare(clientv3.LeaseValue(e.Key()), "=", lease),
			clientv3.Compare(clientv3.Value(e.Key()), "=", lw.id)).
		Then(clientv3.OpPut(lw.key, string(value))).
		Commit()
	if err != nil {
		return 0, err
	}
	if !resp.Succeeded {
		return 0, errNotLeader
	}
	return resp.Header.Revision, nil
}

// String names the writer, e.g. `legacy key writer "cp-1" for "k3s/apiaddresses"`.
func (lw *LegacyKeyWriter) String() string {
	if lw == nil {
		return "nil LegacyKeyWriter"
	}
	return fmt.Sprintf("legacy key writer %q for %q", lw.id, lw.key)
}
