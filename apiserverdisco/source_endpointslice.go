package apiserverdisco

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/go-logr/logr"

	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

const (
	kubernetesNamespace = metav1.NamespaceDefault
	kubernetesService   = "kubernetes"
	httpsPortName       = "https"
)

// EndpointSlices is the Source of the addresses the apiservers register for
// the "kubernetes" Service: the EndpointSlices in namespace "default"
// labelled kubernetes.io/service-name=kubernetes, followed through an
// informer (one list, then a watch). Only ready endpoints count
// (conditions.ready unset or true); the port is the slice's port named
// "https", or its only port. A slice without a usable port, or an
// address that is not valid, is skipped and reported.
//
// Until the informer has synced, and whenever no slice holds a ready
// endpoint, the set is "not yet set" and the last good set is kept: this
// source never delivers an empty set. An apiserver that shuts down
// gracefully removes its own address from these slices, so with a single
// apiserver the slices are briefly empty on every restart; delivering
// that would replace every endpoint a client has (k3s #11934). A
// watcher that must see "no apiserver at all" uses EtcdPrefix.
//
// It needs list and watch on endpointslices.discovery.k8s.io in namespace
// default (see the package documentation).
//
// A nil client, or an interface holding a nil pointer (a nil
// *kubernetes.Clientset, a nil *fake.Clientset), makes NewWatcher return
// an error wrapping ErrInvalidInput. Every failed list or watch request
// is reported (WithErrorHandler, the logger, State.LastError) and retried
// with the informer's backoff (client-go's: 800ms doubling to 30s); the
// informer does not use client-go's watch-list mode, whose retries hold
// up Close. A panic in the client's List or Watch, or in the watch it
// returns, and a nil list with no error, are recovered in the informer's
// goroutines, reported as a *PanicError and retried the same way. A watch
// event whose object is nil, a typed nil or (other than in an ERROR event)
// not an *EndpointSlice is dropped and reported as a *PanicError: it never
// reaches client-go's reflector, which would panic on it.
func EndpointSlices(client kubernetes.Interface) Source {
	name := fmt.Sprintf("EndpointSlices of service %s/%s", kubernetesNamespace, kubernetesService)
	switch {
	case client == nil:
		return Source{name: name, err: invalidInput("apiserverdisco: EndpointSlices: client is a nil Kubernetes client")}
	case isNil(client):
		return Source{name: name, err: invalidInput("apiserverdisco: EndpointSlices: client is a nil Kubernetes client (a nil %T)", client)}
	}
	return Source{name: name, run: func(ctx context.Context, s *sink) error {
		return runSliceSource(ctx, client, s)
	}}
}

func runSliceSource(ctx context.Context, client kubernetes.Interface, s *sink) error {
	// client-go's goroutines log through the context's logger: give them
	// the package's, whose sink cannot panic.
	ctx = logr.NewContext(ctx, s.log.WithName("informer"))
	var calls clientCalls
	// Whatever happens below, return only once no call into the client,
	// and no goroutine forwarding one of its watches, is left.
	defer calls.closeAndWait()
	inf := cache.NewSharedIndexInformer(noWatchList{sliceListWatch(client, s, &calls)}, &discoveryv1.EndpointSlice{}, 0, cache.Indexers{})
	if err := inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		var done *reportedError
		if ctx.Err() == nil && !errors.As(err, &done) && !errors.Is(err, ErrCallbackPanicked) { // those were reported already
			s.failed(fmt.Errorf("apiserverdisco: list/watch EndpointSlices in %s: %w", kubernetesNamespace, err), sliceErrorClass(err), "the informer's backoff")
		}
	}); err != nil {
		return fmt.Errorf("apiserverdisco: EndpointSlices informer: %w", err)
	}
	r := sliceReader{reported: map[string]string{}}
	var synced atomic.Bool
	emit := func() {
		if synced.Load() {
			r.emit(inf.GetStore().List, s)
		}
	}
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { emit() },
		UpdateFunc: func(any, any) { emit() },
		DeleteFunc: func(any) { emit() },
	})
	if err != nil {
		return fmt.Errorf("apiserverdisco: EndpointSlices informer: %w", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { inf.RunWithContext(ctx) })
	if cache.WaitForCacheSync(ctx.Done(), reg.HasSynced) {
		synced.Store(true)
		emit()
	}
	wg.Wait()
	return nil
}

// noWatchList opts the informer out of client-go's watch-list mode (on by
// default since client-go 0.35). In that mode the reflector retries a
// failed request after a backoff of up to 30s without watching its
// context, so Close would wait that long while the apiserver is
// unreachable, and it logs those failures only at V(2), never passing them
// to the watch error handler. The plain list-then-watch mode waits for its
// backoff and its requests under the context, and every list and watch
// goes through sliceListWatch, which reports each failure. The slices of
// one Service are few: listing them costs next to nothing.
type noWatchList struct{ *cache.ListWatch }

// IsWatchListSemanticsUnSupported tells client-go's reflector not to use
// watch-list requests (see k8s.io/client-go/util/watchlist).
func (noWatchList) IsWatchListSemanticsUnSupported() bool { return true }

// reportedError is a list or watch failure sliceListWatch has reported
// already; the watch error handler skips it.
type reportedError struct{ err error }

func (e *reportedError) Error() string { return e.err.Error() }
func (e *reportedError) Unwrap() error { return e.err }

func sliceErrorClass(err error) errorClass {
	if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
		return denied
	}
	return transient
}

// clientCalls counts the calls the informer makes into the caller's
// client and the goroutines forwarding its watches. client-go's reflector
// abandons a list on cancellation without waiting for it; closeAndWait
// waits for every call and forwarder to return, and refuses new ones.
type clientCalls struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// enter reports whether a call may start; if so, exit must follow.
func (c *clientCalls) enter() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.wg.Add(1)
	return true
}

func (c *clientCalls) exit() { c.wg.Done() }

func (c *clientCalls) closeAndWait() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.wg.Wait()
}

var errSourceStopped = errors.New("the EndpointSlices source has stopped")

// sliceListWatch lists and watches the "kubernetes" Service's slices
// through client. It keeps the reflector safe from the client: a panic in
// the client, or in the watch it returns, becomes an error; a nil list
// with no error becomes an error; a watch event whose object is nil, a
// typed nil or not an *EndpointSlice is dropped (see safeWatch). Every
// failed list or watch request is reported at once (WithErrorHandler, the
// logger, State.LastError) and handed to the reflector marked as
// reported; the reflector retries with its backoff. A successful one
// clears State.LastError. The ListFunc and WatchFunc fields are set too,
// for the client-go versions whose reflector calls them.
func sliceListWatch(client kubernetes.Interface, s *sink, calls *clientCalls) *cache.ListWatch {
	tweak := func(o *metav1.ListOptions) { o.LabelSelector = discoveryv1.LabelServiceName + "=" + kubernetesService }
	failed := func(ctx context.Context, what string, err error) error {
		if ctx.Err() != nil || apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
			// Cancelled: not a failure. Expired: the reflector lists
			// again at once, as a watch that fell behind a compaction.
			return err
		}
		s.failed(fmt.Errorf("apiserverdisco: %s EndpointSlices in %s: %w", what, kubernetesNamespace, err), sliceErrorClass(err), "the informer's backoff")
		return &reportedError{err}
	}
	list := func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
		if !calls.enter() {
			return nil, errSourceStopped
		}
		defer calls.exit()
		tweak(&o)
		var l *discoveryv1.EndpointSliceList
		err := protect("the Kubernetes client (list EndpointSlices)", func() (err error) {
			l, err = client.DiscoveryV1().EndpointSlices(kubernetesNamespace).List(ctx, o)
			return err
		})
		if err == nil && l == nil {
			err = newPanicError("the Kubernetes client (list EndpointSlices)", nilResult("returned a nil *v1.EndpointSliceList and no error"))
		}
		if err != nil {
			return nil, failed(ctx, "list", err)
		}
		s.readOK()
		return l, nil
	}
	watchFn := func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
		if !calls.enter() {
			return nil, errSourceStopped
		}
		defer calls.exit()
		tweak(&o)
		var w watch.Interface
		err := protect("the Kubernetes client (watch EndpointSlices)", func() (err error) {
			w, err = client.DiscoveryV1().EndpointSlices(kubernetesNamespace).Watch(ctx, o)
			return err
		})
		if err == nil && isNil(w) {
			err = newPanicError("the Kubernetes client (watch EndpointSlices)", nilResult("returned a nil watch and no error"))
		}
		if err != nil {
			return nil, failed(ctx, "watch", err)
		}
		s.readOK()
		return newSafeWatch(ctx, w, s, calls), nil
	}
	return &cache.ListWatch{
		ListWithContextFunc:  list,
		WatchFuncWithContext: watchFn,
		ListFunc: func(o metav1.ListOptions) (runtime.Object, error) {
			return list(context.Background(), o)
		},
		WatchFunc: func(o metav1.ListOptions) (watch.Interface, error) {
			return watchFn(context.Background(), o)
		},
	}
}

// safeWatch is a watch.Interface of the caller's client, made safe for
// client-go's reflector, which would panic on an event whose object is a
// typed nil (it reads its metadata) and runs in a goroutine of ours. A
// goroutine forwards the client's events and drops, and reports as a
// *PanicError, each one the reflector could not use: an object that is
// nil or a typed nil, or (other than in an ERROR event) not an
// *EndpointSlice. A panicking ResultChan, or a nil channel, reads as a
// closed watch (the reflector watches again); a panicking Stop as
// stopped; both are reported. The forwarder ends when the watch is
// stopped, its channel closes or ctx ends.
type safeWatch struct {
	w    watch.Interface
	s    *sink
	out  chan watch.Event
	stop chan struct{}
	once sync.Once
}

func newSafeWatch(ctx context.Context, w watch.Interface, s *sink, calls *clientCalls) *safeWatch {
	sw := &safeWatch{w: w, s: s, out: make(chan watch.Event), stop: make(chan struct{})}
	var in <-chan watch.Event
	err := protect("the Kubernetes client's watch (ResultChan)", func() error { in = w.ResultChan(); return nil })
	if err == nil && in == nil {
		err = newPanicError("the Kubernetes client's watch (ResultChan)", nilResult("returned a nil channel"))
	}
	if err != nil {
		s.rep.panicked(err)
	}
	if err != nil || !calls.enter() {
		close(sw.out)
		return sw
	}
	go func() {
		defer calls.exit()
		defer close(sw.out)
		sw.forward(ctx, in)
	}()
	return sw
}

func (sw *safeWatch) forward(ctx context.Context, in <-chan watch.Event) {
	for {
		var ev watch.Event
		select {
		case <-sw.stop:
			return
		case <-ctx.Done():
			return
		case e, ok := <-in:
			if !ok {
				return
			}
			ev = e
		}
		if why := unusableEvent(ev); why != "" {
			sw.s.rep.panicked(newPanicError("the Kubernetes client's watch (ResultChan)", nilResult("delivered "+why+"; dropped")))
			continue
		}
		select {
		case sw.out <- ev:
		case <-sw.stop:
			return
		case <-ctx.Done():
			return
		}
	}
}

// unusableEvent says why the reflector cannot take ev, or "".
func unusableEvent(ev watch.Event) string {
	switch {
	case ev.Object == nil:
		return fmt.Sprintf("a %s event without an object", ev.Type)
	case isNil(ev.Object):
		return fmt.Sprintf("a %s event with a nil %T", ev.Type, ev.Object)
	case ev.Type == watch.Error:
		return "" // the reflector turns any object into an error
	}
	if _, ok := ev.Object.(*discoveryv1.EndpointSlice); !ok {
		return fmt.Sprintf("a %s event with a %T, not an *v1.EndpointSlice", ev.Type, ev.Object)
	}
	return ""
}

func (sw *safeWatch) Stop() {
	sw.once.Do(func() {
		close(sw.stop)
		if err := protect("the Kubernetes client's watch (Stop)", func() error { sw.w.Stop(); return nil }); err != nil {
			sw.s.rep.panicked(err)
		}
	})
}

func (sw *safeWatch) ResultChan() <-chan watch.Event { return sw.out }

// sliceReader turns the cached slices into a set, reporting each malformed
// slice once per resourceVersion.
type sliceReader struct {
	mu       sync.Mutex
	reported map[string]string // slice name → resourceVersion already reported
}

// emit reports the set the informer's store holds now. It lists the store
// under r.mu, so that of two concurrent calls (a handler's and the one
// after the sync) the one that reports last also read last: a list taken
// before the lock could be older than the one already reported, and would
// replace a newer set with a stale one.
func (r *sliceReader) emit(list func() []any, s *sink) {
	r.mu.Lock()
	defer r.mu.Unlock()
	objs := list()
	var addrs []string
	seen := make(map[string]string, len(objs))
	for _, obj := range objs {
		es, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok || es.Labels[discoveryv1.LabelServiceName] != kubernetesService {
			continue
		}
		key := "EndpointSlice " + es.Namespace + "/" + es.Name
		var bad *MalformedValueError
		port, err := slicePort(es)
		if err != nil {
			bad = newMalformed(key, nil, err)
		} else {
			var b badEntries
			total := 0
			for _, ep := range es.Endpoints {
				if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
					continue
				}
				for _, a := range ep.Addresses {
					total++
					addr, err := normalizeAddress(net.JoinHostPort(a, port))
					if err != nil {
						b.add(a, err)
						continue
					}
					addrs = append(addrs, addr)
				}
			}
			if bad = b.malformed(key, "", total); bad != nil {
				bad.Value = bad.Entries[0]
			}
		}
		// One report per slice and resourceVersion: every event re-reads
		// the whole store.
		if bad != nil && r.reported[es.Name] != es.ResourceVersion {
			s.malformed(bad)
		}
		seen[es.Name] = es.ResourceVersion
	}
	r.reported = seen
	// No ready endpoint is what a gracefully stopping apiserver leaves
	// behind (its lease reconciler removes its own address), not proof that
	// no apiserver will serve: keep the last good set (see EndpointSlices).
	if len(addrs) == 0 {
		s.notYetSet("no EndpointSlice of service default/kubernetes has a ready endpoint")
		return
	}
	s.set(addrs)
}

// slicePort picks the "https" port, or the only port.
func slicePort(es *discoveryv1.EndpointSlice) (string, error) {
	var chosen *discoveryv1.EndpointPort
	for i := range es.Ports {
		if p := &es.Ports[i]; p.Name != nil && *p.Name == httpsPortName {
			chosen = p
			break
		}
	}
	if chosen == nil {
		if len(es.Ports) != 1 {
			return "", fmt.Errorf("%d ports and none named %q", len(es.Ports), httpsPortName)
		}
		chosen = &es.Ports[0]
	}
	if chosen.Port == nil {
		return "", errors.New("the port has no number")
	}
	return strconv.Itoa(int(*chosen.Port)), nil
}
