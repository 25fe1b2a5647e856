package cnibootstrap_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kubeboot/kubeboot/cnibootstrap"
)

// fixedDelay is a policy that always answers the same delay.
type fixedDelay time.Duration

func (d fixedDelay) NextBackOff() time.Duration { return time.Duration(d) }
func (fixedDelay) Reset()                       {}

// listKinds are the list kinds the fake dynamic client needs for the
// resources the waiter reads.
var listKinds = map[schema.GroupVersionResource]string{
	{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"}:        "ClusterRoleList",
	{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"}: "ClusterRoleBindingList",
	{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"}:               "RoleList",
	{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"}:        "RoleBindingList",
	crdGVR:                "CustomResourceDefinitionList",
	clusterInformationGVR: "ClusterInformationList",
	configMapGVR:          "ConfigMapList",
}

// failingClients are fake clients whose lists fail at once and whose
// SubjectAccessReviews are denied at once: every retry loop of the waiter
// runs without any network in between, so only the delay floor paces it.
// The counters count lists and reviews.
func failingClients(lists, reviews *atomic.Int64) cnibootstrap.Clients {
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds)
	dyn.PrependReactor("list", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
		lists.Add(1)
		return true, nil, errors.New("injected list failure")
	})
	kube := fake.NewClientset()
	kube.PrependReactor("create", "subjectaccessreviews", func(k8stesting.Action) (bool, runtime.Object, error) {
		reviews.Add(1)
		return true, &authorizationv1.SubjectAccessReview{Status: authorizationv1.SubjectAccessReviewStatus{Allowed: false}}, nil
	})
	return cnibootstrap.Clients{Dynamic: dyn, Kube: kube}
}

// TestNonPositiveDelaysDoNotSpin: a policy that answers zero or a negative
// delay (not backoff.Stop) gets MinDelay instead. Lists fail and reviews
// are denied instantly (fakes: this is about the pacing logic alone), so
// without the floor each loop would spin; with it, n attempts of one loop
// take at least (n-1)·MinDelay, a bound that timers guarantee.
func TestNonPositiveDelaysDoNotSpin(t *testing.T) {
	for _, d := range []time.Duration{0, -time.Second, time.Nanosecond} {
		t.Run(fmt.Sprint(d), func(t *testing.T) {
			var lists, reviews atomic.Int64
			w, err := cnibootstrap.New(failingClients(&lists, &reviews), []cnibootstrap.Requirement{
				cnibootstrap.ClusterRoleExists{Role: "x"},
				cnibootstrap.Allowed{User: "u", Verb: "get", Resource: "pods"},
			}, cnibootstrap.WithBackoff(func() backoff.BackOff { return fixedDelay(d) }))
			require.NoError(t, err)
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			require.ErrorIs(t, w.Wait(ctx), context.DeadlineExceeded)
			elapsed := time.Since(start)

			// Three loops list: the role's watch and the two RBAC watches
			// of Allowed; one reviews.
			bound := int64(elapsed/cnibootstrap.MinDelay) + 1
			t.Logf("in %v: %d lists (bound %d), %d reviews (bound %d)", elapsed, lists.Load(), 3*bound, reviews.Load(), bound)
			assert.GreaterOrEqual(t, lists.Load(), int64(3), "every loop listed")
			assert.GreaterOrEqual(t, reviews.Load(), int64(1), "the review ran")
			assert.LessOrEqual(t, lists.Load(), 3*bound, "lists faster than one per MinDelay per loop")
			assert.LessOrEqual(t, reviews.Load(), bound, "reviews faster than one per MinDelay")
		})
	}
}

// stopAfter answers delay once, then backoff.Stop.
type stopAfter struct {
	delay time.Duration
	calls int
}

func (s *stopAfter) NextBackOff() time.Duration {
	s.calls++
	if s.calls == 1 {
		return s.delay
	}
	return backoff.Stop
}

func (s *stopAfter) Reset() { s.calls = 0 }

// TestStopDoesNotEndRetries: a policy that says backoff.Stop does not
// leave a requirement unmet for good, though a fresh Check would find it
// met: the waiter keeps retrying at the policy's last delay. The first two
// lists fail; the policy answers 20 ms after the first and Stop after the
// second; the third list must still come.
func TestStopDoesNotEndRetries(t *testing.T) {
	var lists atomic.Int64
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds)
	dyn.PrependReactor("list", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
		if lists.Add(1) <= 2 {
			return true, nil, errors.New("injected list failure")
		}
		return false, nil, nil
	})
	c := cnibootstrap.Clients{Dynamic: dyn, Kube: fake.NewClientset()}
	rec := newRecorder()
	w, err := cnibootstrap.New(c, []cnibootstrap.Requirement{cnibootstrap.ClusterRoleExists{Role: "x"}},
		cnibootstrap.WithProgress(rec.progress),
		cnibootstrap.WithBackoff(func() backoff.BackOff { return &stopAfter{delay: 20 * time.Millisecond} }))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	errc := waitAsync(ctx, w)
	require.NoError(t, rec.await("after the failed list", func(u []cnibootstrap.Unmet) bool {
		return len(u) == 1 && u[0].Err != nil
	}))
	require.NoError(t, rec.await("with the list retried after Stop", func(u []cnibootstrap.Unmet) bool {
		return len(u) == 1 && u[0].Reason == "not found"
	}))
	cancel()
	require.ErrorIs(t, result(t, errc), context.Canceled)
}
