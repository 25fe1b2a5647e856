package apiserverdisco

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"

	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	discoveryinformers "k8s.io/client-go/informers/discovery/v1"
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
func EndpointSlices(client kubernetes.Interface) Source {
	name := fmt.Sprintf("EndpointSlices of service %s/%s", kubernetesNamespace, kubernetesService)
	if client == nil {
		return Source{name: name, err: invalidInput("apiserverdisco: %s: nil Kubernetes client", name)}
	}
	return Source{name: name, run: func(ctx context.Context, s *sink) error {
		return runSliceSource(ctx, client, s)
	}}
}

func runSliceSource(ctx context.Context, client kubernetes.Interface, s *sink) error {
	inf := discoveryinformers.NewFilteredEndpointSliceInformer(client, kubernetesNamespace, 0, cache.Indexers{},
		func(o *metav1.ListOptions) { o.LabelSelector = discoveryv1.LabelServiceName + "=" + kubernetesService })
	if err := inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		if ctx.Err() == nil {
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
		report := func(value string, err error) {
			if r.reported[es.Name] != es.ResourceVersion {
				s.malformed(newMalformed(key, []byte(value), err))
			}
		}
		port, err := slicePort(es)
		if err != nil {
			report("", err)
		} else {
			for _, ep := range es.Endpoints {
				if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
					continue
				}
				for _, a := range ep.Addresses {
					addr, err := normalizeAddress(net.JoinHostPort(a, port))
					if err != nil {
						report(a, err)
						continue
					}
					addrs = append(addrs, addr)
				}
			}
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
