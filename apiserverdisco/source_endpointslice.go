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
// an error wrapping ErrInvalidInput. A panic in the client's List or
// Watch, or in the watch it returns, is recovered in the informer's
// goroutines, reported as a *PanicError (WithErrorHandler, the logger)
// and retried with the informer's backoff.
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
	inf := cache.NewSharedIndexInformer(cache.ToListWatcherWithWatchListSemantics(sliceListWatch(client, s), client),
		&discoveryv1.EndpointSlice{}, 0, cache.Indexers{})
	if err := inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		if ctx.Err() == nil && !errors.Is(err, ErrCallbackPanicked) { // those were reported already
			class := transient
			if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
				class = denied
			}
			s.failed(fmt.Errorf("apiserverdisco: list/watch EndpointSlices in %s: %w", kubernetesNamespace, err), class, "the informer's backoff")
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

// sliceListWatch lists and watches the "kubernetes" Service's slices
// through client, turning a panic in the client, or in the watch it
// returns, into an error (the reflector reports it through the watch error
// handler and retries with its backoff). The ListFunc and WatchFunc fields
// are set too, for the client-go versions whose reflector calls them.
func sliceListWatch(client kubernetes.Interface, s *sink) *cache.ListWatch {
	tweak := func(o *metav1.ListOptions) { o.LabelSelector = discoveryv1.LabelServiceName + "=" + kubernetesService }
	list := func(ctx context.Context, o metav1.ListOptions) (obj runtime.Object, err error) {
		tweak(&o)
		err = protect("the Kubernetes client (list EndpointSlices)", func() (err error) {
			obj, err = client.DiscoveryV1().EndpointSlices(kubernetesNamespace).List(ctx, o)
			return err
		})
		reportPanic(err, s)
		return obj, err
	}
	watchFn := func(ctx context.Context, o metav1.ListOptions) (w watch.Interface, err error) {
		tweak(&o)
		err = protect("the Kubernetes client (watch EndpointSlices)", func() (err error) {
			w, err = client.DiscoveryV1().EndpointSlices(kubernetesNamespace).Watch(ctx, o)
			return err
		})
		if err == nil && isNil(w) {
			err = newPanicError("the Kubernetes client (watch EndpointSlices)", nilResult("returned a nil watch and no error"))
		}
		if err != nil {
			reportPanic(err, s)
			return nil, err
		}
		return &safeWatch{w: w, s: s}, nil
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

// reportPanic reports err if it is a recovered panic, at once: client-go
// does not pass every list or watch error to the watch error handler (a
// failed watch-list request falls back to a list silently), and that
// handler skips them.
func reportPanic(err error, s *sink) {
	if errors.Is(err, ErrCallbackPanicked) {
		s.rep.panicked(err)
	}
}

// safeWatch is a watch.Interface of the caller's client, run under
// recover: a panicking ResultChan reads as a closed watch (the reflector
// lists again), a panicking Stop as stopped; both are reported.
type safeWatch struct {
	w watch.Interface
	s *sink
}

func (sw *safeWatch) Stop() {
	if err := protect("the Kubernetes client's watch (Stop)", func() error { sw.w.Stop(); return nil }); err != nil {
		sw.s.rep.panicked(err)
	}
}

func (sw *safeWatch) ResultChan() <-chan watch.Event {
	var ch <-chan watch.Event
	err := protect("the Kubernetes client's watch (ResultChan)", func() error { ch = sw.w.ResultChan(); return nil })
	if err == nil && ch == nil {
		err = newPanicError("the Kubernetes client's watch (ResultChan)", nilResult("returned a nil channel"))
	}
	if err != nil {
		sw.s.rep.panicked(err)
		closed := make(chan watch.Event)
		close(closed)
		return closed
	}
	return ch
}

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
