package apiserverdisco

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Registration is one apiserver's published address: a key under the
// prefix, attached to an etcd lease that the Registration keeps alive from
// its own goroutine. It is the etcd concurrency.Session idea with one
// difference: losing the lease (expired during a long partition or an
// etcd outage, revoked by someone, its keepalive stream ended) or the key
// (deleted by someone) is not the end — the Registration grants a new
// lease and puts the key again, at once and then with backoff, until its
// context ends or Close is called. It follows its own key with a watch,
// so a revoked lease or a deleted key is noticed as soon as etcd applies
// it, not at the next keepalive.
//
// Its methods are safe for concurrent use.
type Registration struct {
	client  *clientv3.Client
	key     string
	value   string
	address string
	o       options
	log     logr.Logger
	cleanup context.Context // the Publish context without its cancellation, for Close

	cancel context.CancelCauseFunc
	done   chan struct{}

	mu    sync.Mutex
	lease clientv3.LeaseID
	err   error

	closeOnce sync.Once
	closeErr  error
}

// Publish validates id and address, then puts the key <prefix><id> with the
// value {"version":1,"address":"<address>"} under a new lease of the
// configured TTL, and returns once that put has succeeded. Options:
// WithPrefix, WithTTL, WithBackoff, WithErrorHandler, WithLogger,
// WithRequestTimeout.
//
// ctx bounds the whole life of the registration, not only this call: when
// it ends, the keepalive stops and the key expires with its lease within
// the TTL, as if the server had died (it is not deleted; call Close for
// that). The first grant and put are bounded by the request timeout too.
//
// The address must be "host:port" with a port in 1-65535, IPv6 hosts in
// brackets ("[2001:db8::1]:6443"); it is stored in canonical form. The ID
// is the key's last element (a node name): non-empty, no '/', no spaces.
// Bad input (these, a nil ctx, a nil client or one not made by
// clientv3.New, a bad option) returns an error wrapping ErrInvalidInput
// and naming the argument, and ErrInvalidAddress or ErrInvalidID where
// one of those is the reason, before anything is written; a failed first
// grant or put returns the etcd error, naming the key.
//
// Failures met later (a re-publish that fails and is retried) and panics
// recovered in code of the caller's (the backoff policy, the logger's
// sink, the client's KV, Lease or Watcher implementation) are logged and
// passed to the WithErrorHandler function. A panic in the client while
// publishing again is retried like a failed request; one while holding
// the key (keepalive, watch) stops the registration, and Err returns the
// *PanicError.
//
// Two Registrations with the same ID do not fight: the last Publish wins,
// and the other one keeps its lease, stands by, and publishes again when
// that key goes away. Publishing again is conditional (one transaction):
// the key is put only if it is missing or still attached to the
// registration's own previous lease; if another lease holds it, the
// registration keeps standing by on its new lease. So a standby that loses
// its lease never takes the key from the active publisher, and when the
// key goes away only one standby takes it.
func Publish(ctx context.Context, client *clientv3.Client, id, address string, opts ...Option) (*Registration, error) {
	if err := checkContext(ctx, "Publish"); err != nil {
		return nil, err
	}
	if err := checkEtcdClient(client, "Publish", true); err != nil {
		return nil, err
	}
	o, log, err := buildOptions(ctx, forPublish, opts)
	if err != nil {
		return nil, err
	}
	if err := validateID(id); err != nil {
		return nil, invalidInput("apiserverdisco: Publish: %w", err)
	}
	addr, err := normalizeAddress(address)
	if err != nil {
		return nil, invalidInput("apiserverdisco: Publish %q: %w", id, err)
	}
	r := &Registration{
		client:  client,
		key:     o.prefix + id,
		value:   encodeRecord(addr),
		address: addr,
		o:       o,
		cleanup: context.WithoutCancel(ctx),
		done:    make(chan struct{}),
	}
	r.log = log.WithValues("key", r.key, "address", addr)
	lease, rev, _, err := r.put(ctx, 0)
	if err != nil {
		return nil, err
	}
	r.lease = lease
	rctx, cancel := context.WithCancelCause(ctx)
	r.cancel = cancel
	go r.run(rctx, rev)
	r.log.V(1).Info("published", "lease", fmt.Sprintf("%x", lease))
	return r, nil
}

// Key returns the etcd key the registration owns. It does not block.
// On a nil Registration it returns "".
func (r *Registration) Key() string {
	if r == nil {
		return ""
	}
	return r.key
}

// Address returns the published address in canonical form. It does not
// block. On a nil Registration it returns "".
func (r *Registration) Address() string {
	if r == nil {
		return ""
	}
	return r.address
}

// Lease returns the lease the registration currently holds: the one its
// key is attached to, unless it stands by because another Registration
// with the same ID holds the key. It changes when the registration
// publishes again after losing its lease. It does not block. On a nil
// Registration it returns 0.
func (r *Registration) Lease() clientv3.LeaseID {
	if r.invalid() {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lease
}

// Done returns a channel that is closed when the registration has stopped
// keeping its key alive: its context ended, Close was called, or the etcd
// client was closed. Unlike concurrency.Session.Done, it is not closed when
// a lease is lost, because the registration then re-publishes. For a nil
// Registration it returns a closed channel.
func (r *Registration) Done() <-chan struct{} {
	if r.invalid() {
		return closedChan
	}
	return r.done
}

// invalid reports a nil or zero Registration (not made by Publish).
func (r *Registration) invalid() bool { return r == nil || r.done == nil }

var errNotARegistration = invalidInput("apiserverdisco: the Registration is nil or was not made by Publish")

// Err returns nil while the registration is live, and after Done is closed
// the reason it stopped: ErrClosed after Close, the context's cause, or an
// error saying the etcd client was closed, or a *PanicError. It does not
// block. For a nil Registration it returns an error wrapping
// ErrInvalidInput.
func (r *Registration) Err() error {
	if r.invalid() {
		return errNotARegistration
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Close stops the keepalive, waits for the registration's goroutine to
// end, then deletes the key — only if it is still attached to this
// registration's lease, so a successor that re-used the ID keeps its key —
// and revokes the lease. The cleanup runs under a fresh context bounded by
// the request timeout, so it works after the Publish context has ended.
// Close is safe to call more than once and from several goroutines; later
// calls return the first call's result. The error names the key. On a nil
// Registration it returns an error wrapping ErrInvalidInput.
func (r *Registration) Close() error {
	if r.invalid() {
		return errNotARegistration
	}
	r.closeOnce.Do(func() {
		r.cancel(ErrClosed)
		<-r.done
		r.closeErr = protect("the etcd client (close)", r.unpublish)
	})
	return r.closeErr
}

// unpublish deletes the key if it is still attached to the registration's
// lease, and revokes the lease, under a fresh bounded context.
func (r *Registration) unpublish() error {
	ctx, cancel := context.WithTimeout(r.cleanup, r.o.requestTimeout)
	defer cancel()
	lease := r.Lease()
	_, err := r.client.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(r.key), "=", lease)).
		Then(clientv3.OpDelete(r.key)).
		Commit()
	if err != nil {
		return fmt.Errorf("apiserverdisco: close: delete key %q: %w", r.key, err)
	}
	if _, err := r.client.Revoke(ctx, lease); err != nil && !isLeaseNotFound(err) {
		return fmt.Errorf("apiserverdisco: close: revoke lease %x of key %q: %w", lease, r.key, err)
	}
	r.log.V(1).Info("unpublished")
	return nil
}

// put grants a lease and puts the key under it, within one request
// timeout, and returns the lease, the revision of the put (or of the
// check) and whether the key is now attached to the lease.
//
// With from == 0 (Publish) the put is unconditional: the last publisher
// wins. Otherwise (publishing again after lease from was lost or the key
// deleted) it puts, in one transaction, only if the key is missing or
// still attached to from; if another lease holds it, the new lease is
// kept without the key and held is false: the registration stands by.
// On failure it revokes the lease it may have granted. A panic in the
// client is returned as a *PanicError.
func (r *Registration) put(ctx context.Context, from clientv3.LeaseID) (lease clientv3.LeaseID, rev int64, held bool, err error) {
	err = protect("the etcd client (publish)", func() (err error) {
		lease, rev, held, err = r.putOnce(ctx, from)
		return err
	})
	return lease, rev, held, err
}

func (r *Registration) putOnce(ctx context.Context, from clientv3.LeaseID) (lease clientv3.LeaseID, rev int64, held bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, r.o.requestTimeout)
	defer cancel()
	ttl := leaseSeconds(r.o.ttl)
	g, err := r.client.Grant(ctx, ttl)
	if err != nil {
		return 0, 0, false, fmt.Errorf("apiserverdisco: publish %q: grant a %ds lease: %w", r.key, ttl, err)
	}
	put := clientv3.OpPut(r.key, r.value, clientv3.WithLease(g.ID))
	txn := r.client.Txn(ctx)
	if from != 0 {
		// etcd compares are ANDed; "missing or ours" is an If with a
		// nested transaction in its Else.
		txn = txn.If(clientv3.Compare(clientv3.CreateRevision(r.key), "=", 0)).
			Then(put).
			Else(clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(r.key), "=", from)}, []clientv3.Op{put}, nil))
	} else {
		txn = txn.Then(put)
	}
	resp, err := txn.Commit()
	if err != nil {
		r.revoke(g.ID)
		return 0, 0, false, fmt.Errorf("apiserverdisco: publish %q: put under lease %x: %w", r.key, g.ID, err)
	}
	held = resp.Succeeded || resp.Responses[0].GetResponseTxn().GetSucceeded()
	return g.ID, resp.Header.Revision, held, nil
}

// revoke revokes a lease this registration no longer uses, best effort,
// under its own bounded context.
func (r *Registration) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(r.cleanup, r.o.requestTimeout)
	defer cancel()
	if _, err := r.client.Revoke(ctx, id); err != nil && !isLeaseNotFound(err) {
		r.log.V(1).Info("could not revoke an abandoned lease; it will expire", "lease", fmt.Sprintf("%x", id), "error", err.Error())
	}
}

// run holds the key and publishes it again whenever it is lost, until ctx
// ends or the client is closed. A panic (in the client's implementation)
// stops the registration with a *PanicError.
func (r *Registration) run(ctx context.Context, rev int64) {
	defer close(r.done)
	defer func() {
		if v := recover(); v != nil {
			pe := newPanicError("the etcd client (keep the key alive)", v)
			r.o.rep.panicked(pe)
			r.mu.Lock()
			if r.err == nil {
				r.err = pe
			}
			r.mu.Unlock()
		}
	}()
	lease := r.Lease()
	for {
		reason := r.hold(ctx, lease, rev)
		if r.stopped(ctx) {
			return
		}
		r.log.Info("publishing again", "reason", reason, "lease", fmt.Sprintf("%x", lease))
		next, nextRev, ok := r.republish(ctx, lease)
		if !ok {
			return
		}
		r.revoke(lease)
		lease, rev = next, nextRev
	}
}

// hold keeps lease alive and follows the key from rev+1. It returns why
// the key must be published again — the lease expired or was revoked (the
// keepalive channel closed), or the key was deleted — or "" once ctx has
// ended. A put under another lease means another publisher took the ID:
// the registration keeps its lease and stands by, and publishes again when
// that key goes away. A watch that fails is re-established after a check
// of the key, with backoff.
func (r *Registration) hold(ctx context.Context, lease clientv3.LeaseID, rev int64) string {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ka, err := r.client.KeepAlive(ctx, lease)
	if err != nil {
		return fmt.Sprintf("keepalive of lease %x failed: %v", lease, err)
	}
	watch := func() clientv3.WatchChan {
		return r.client.Watch(clientv3.WithRequireLeader(ctx), r.key, clientv3.WithRev(rev+1))
	}
	wch := watch()
	b := newRetrier(r.o.newBackoff, r.o.rep.panicked)
	var retry *time.Timer
	var retryC <-chan time.Time
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()
	later := func() {
		retry = time.NewTimer(b.next())
		retryC = retry.C
	}
	for {
		select {
		case <-ctx.Done():
			return ""
		case _, ok := <-ka:
			if !ok {
				return fmt.Sprintf("lease %x expired, was revoked or could not be refreshed in time", lease)
			}
		case resp, ok := <-wch:
			if !ok || resp.Err() != nil || resp.Canceled {
				if ctx.Err() != nil {
					return ""
				}
				wch = nil
				later()
				continue
			}
			rev = max(rev, resp.Header.Revision)
			for _, ev := range resp.Events {
				if ev.Type == clientv3.EventTypeDelete {
					return "the key was deleted"
				}
			}
		case <-retryC:
			retryC = nil
			gctx, gcancel := context.WithTimeout(ctx, r.o.requestTimeout)
			resp, err := r.client.Get(gctx, r.key)
			gcancel()
			switch {
			case err != nil:
				later()
			case len(resp.Kvs) == 0:
				return "the key was deleted"
			default:
				rev = resp.Header.Revision
				wch = watch()
			}
		}
	}
}

// republish takes a new lease and puts the key under it if the key is
// missing or still attached to the lost lease from (see put), else stands
// by on the new lease: once at once, then with backoff, until it succeeds
// (true) or the registration stops (false).
func (r *Registration) republish(ctx context.Context, from clientv3.LeaseID) (clientv3.LeaseID, int64, bool) {
	b := newRetrier(r.o.newBackoff, r.o.rep.panicked)
	for {
		lease, rev, held, err := r.put(ctx, from)
		if err == nil {
			r.mu.Lock()
			r.lease = lease
			r.mu.Unlock()
			if held {
				r.log.Info("published again", "lease", fmt.Sprintf("%x", lease))
			} else {
				r.log.Info("standing by: another registration with this ID holds the key", "lease", fmt.Sprintf("%x", lease))
			}
			return lease, rev, true
		}
		if r.stopped(ctx) {
			return 0, 0, false
		}
		d := b.next()
		switch {
		case errors.Is(err, ErrCallbackPanicked):
			r.log.Error(err, "recovered a panic in code supplied by the caller; retrying", "retryIn", d.String())
		case classify(err) == denied:
			r.log.Error(err, "publishing again was refused; retrying", "retryIn", d.String())
		default:
			r.log.Info("publishing again failed; retrying", "error", err.Error(), "retryIn", d.String())
		}
		r.o.rep.handle(err)
		if sleepCtx(ctx, d) != nil {
			r.stopped(ctx)
			return 0, 0, false
		}
	}
}

// stopped records why the registration ends, if it does: its context ended
// or the client was closed.
func (r *Registration) stopped(ctx context.Context) bool {
	var err error
	switch {
	case ctx.Err() != nil:
		err = context.Cause(ctx)
	case r.client.Ctx().Err() != nil:
		err = fmt.Errorf("apiserverdisco: registration %q: the etcd client was closed", r.key)
	default:
		return false
	}
	r.mu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.mu.Unlock()
	return true
}
