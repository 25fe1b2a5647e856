package cnibootstrap_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeboot/kubeboot/cnibootstrap"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// TestCalicoRace replays rke2 #7808: calico-node needs ClusterInformation
// "default" (which only the first calico-node creates) and typha needs its
// ClusterRole. Everything is created after Wait starts, one piece at a
// time, in the worst order: the binding before its role, the role before
// the CRD, the CRD before the object, and the object first with
// datastoreReady false. Wait must return only after the last change, and
// the progress reports must show the unmet set shrinking.
func TestCalicoRace(t *testing.T) {
	a, c := server(t)
	cs, err := a.Clientset()
	require.NoError(t, err)

	rec := newRecorder()
	w, err := cnibootstrap.New(c, calicoRequirements("default"), cnibootstrap.WithProgress(rec.progress), testBackoff())
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*guard)
	defer cancel()
	errc := waitAsync(ctx, w)

	// notReturned fails the step if Wait has already returned.
	notReturned := func(step string) error {
		select {
		case err := <-errc:
			return fmt.Errorf("Wait returned after %s, before the last change: %v", step, err)
		default:
			return nil
		}
	}
	steps := make(chan error, 1)
	go func() { steps <- createInWorstOrder(ctx, a, cs, c, rec, notReturned) }()

	require.NoError(t, <-steps)
	require.NoError(t, result(t, errc), "Wait after datastoreReady became true")

	// The reports shrink: every report's set is contained in the one
	// before, and the last is empty.
	reports := rec.all()
	require.NotEmpty(t, reports)
	for i := 1; i < len(reports); i++ {
		for _, n := range names(reports[i]) {
			assert.Contains(t, names(reports[i-1]), n, "report %d grew: %v after %v", i, reports[i], reports[i-1])
		}
	}
	assert.Empty(t, reports[len(reports)-1], "the last report")
	var sizes []int
	for _, r := range reports {
		sizes = append(sizes, len(r))
	}
	t.Logf("unmet set sizes reported: %v", sizes)
	for _, r := range reports {
		t.Logf("report: %v", r)
	}
}

// createInWorstOrder creates Calico's prerequisites in the worst order,
// checking after each step that the waiter saw it and did not return.
func createInWorstOrder(ctx context.Context, a *testenv.APIServer, cs kubernetes.Interface, c cnibootstrap.Clients,
	rec *recorder, notReturned func(string) error) error {
	// Everything is unmet at first.
	if err := rec.await("with every requirement unmet", only(nameCRD, nameObject, nameRole, nameTypha)); err != nil {
		return err
	}
	if _, err := cs.CoreV1().ServiceAccounts("kube-system").Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "calico-typha", Namespace: "kube-system"}}, metav1.CreateOptions{}); err != nil {
		return err
	}

	// 1. The binding, to a role that does not exist yet: nothing holds.
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "calico-typha"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "calico-typha"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "kube-system", Name: "calico-typha"}},
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		return err
	}
	if err := rec.await("denying typha after the binding", func(u []cnibootstrap.Unmet) bool {
		return strings.Contains(reason(u, nameTypha), "cannot list clusterinformations.crd.projectcalico.org") &&
			reason(u, nameRole) == "not found"
	}); err != nil {
		return err
	}

	// 2. The role: the role and typha's permission hold, before the CRD
	// even exists.
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "calico-typha"}, Rules: typhaRules}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return err
	}
	if err := rec.await("with the role and permission met", only(nameCRD, nameObject)); err != nil {
		return err
	}
	if err := notReturned("the role"); err != nil {
		return err
	}
	latest := rec.all()[len(rec.all())-1]
	if r := reason(latest, nameObject); !strings.Contains(r, "resource not served") {
		return fmt.Errorf("object reason before the CRD exists = %q, want it to say the resource is not served", r)
	}

	// 3. The CRD: established, and the object's watch starts on its own.
	if _, err := c.Dynamic.Resource(crdGVR).Create(ctx, calicoCRD("clusterinformations", "ClusterInformation"), metav1.CreateOptions{}); err != nil {
		return err
	}
	if err := rec.await("with only the object missing", func(u []cnibootstrap.Unmet) bool {
		return only(nameObject)(u) && reason(u, nameObject) == "not found"
	}); err != nil {
		return err
	}
	if err := notReturned("the CRD"); err != nil {
		return err
	}

	// 4. The object, not ready yet.
	if err := createEventually(ctx, c, clusterInformation("default", false)); err != nil {
		return err
	}
	if err := rec.await("with datastoreReady false", func(u []cnibootstrap.Unmet) bool {
		return only(nameObject)(u) && reason(u, nameObject) == "spec.datastoreReady is false, want true"
	}); err != nil {
		return err
	}
	if err := notReturned("the object with datastoreReady false"); err != nil {
		return err
	}

	// 5. The last change.
	obj, err := c.Dynamic.Resource(clusterInformationGVR).Get(ctx, "default", metav1.GetOptions{})
	if err != nil {
		return err
	}
	if err := unstructured.SetNestedField(obj.Object, true, "spec", "datastoreReady"); err != nil {
		return err
	}
	_, err = c.Dynamic.Resource(clusterInformationGVR).Update(ctx, obj, metav1.UpdateOptions{})
	return err
}

// createEventually creates a custom object, retrying every 50 ms while its
// freshly established CRD is not served yet (the apiserver's handler can
// lag the Established condition by a moment). It runs off the test's
// goroutine, so it returns an error instead of failing the test.
func createEventually(ctx context.Context, c cnibootstrap.Clients, obj *unstructured.Unstructured) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := c.Dynamic.Resource(clusterInformationGVR).Create(ctx, obj, metav1.CreateOptions{})
		if !apierrors.IsNotFound(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("creating %s: resource still not served (%w): %w", obj.GetName(), err, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// TestCRDEstablishedNotJustPresent creates a second CRD in Calico's group
// whose list kind is already taken: the real apiserver stores it but sets
// NamesAccepted=False (ListKindConflict) and Established=False
// (NotAccepted). Wait must stay blocked, saying why, and Check must agree;
// once the conflicting CRD is deleted the names are accepted and Wait
// returns.
func TestCRDEstablishedNotJustPresent(t *testing.T) {
	_, c := server(t)
	create(t, c.Dynamic, crdGVR, calicoCRD("clusterinformations", "ClusterInformation"))
	const conflicting = "clusterinformationalts.crd.projectcalico.org"
	create(t, c.Dynamic, crdGVR, calicoCRD("clusterinformationalts", "ClusterInformation"))

	rec := newRecorder()
	w, err := cnibootstrap.New(c, []cnibootstrap.Requirement{cnibootstrap.CRDEstablished{CRD: conflicting, InDiscovery: true}},
		cnibootstrap.WithProgress(rec.progress), testBackoff())
	require.NoError(t, err)

	wantReason := `Established=False (NotAccepted), NamesAccepted=False (ListKindConflict: "ClusterInformationList" is already in use)`
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	errc := waitAsync(ctx, w)
	require.NoError(t, rec.await("naming the conditions", func(u []cnibootstrap.Unmet) bool {
		return reason(u, "crd "+conflicting) == wantReason
	}))

	var ue *cnibootstrap.UnmetError
	checkErr := w.Check(context.Background())
	require.ErrorAs(t, checkErr, &ue, "Check: %v", checkErr)
	require.Len(t, ue.Unmet, 1)
	assert.Equal(t, "crd "+conflicting+": "+wantReason, ue.Unmet[0].String())

	// Deleting the CRD that holds the names lets the second one be
	// accepted and established: Wait returns, woken by the event, once
	// discovery lists it too.
	delCtx, delCancel := context.WithTimeout(context.Background(), guard)
	defer delCancel()
	select {
	case err := <-errc:
		t.Fatalf("Wait returned for a CRD that is not established: %v", err)
	default:
	}
	require.NoError(t, c.Dynamic.Resource(crdGVR).Delete(delCtx, clusterInformationCRD, metav1.DeleteOptions{}))
	require.NoError(t, result(t, errc))
	res, err := c.Kube.Discovery().ServerResourcesForGroupVersion("crd.projectcalico.org/v1")
	require.NoError(t, err)
	assert.True(t, slices.ContainsFunc(res.APIResources, func(r metav1.APIResource) bool { return r.Name == "clusterinformationalts" }))
	for _, r := range rec.all() {
		if rs := reason(r, "crd "+conflicting); strings.HasPrefix(rs, "established;") {
			t.Logf("seen while discovery caught up: %s", rs)
		}
	}
}

// TestTimeoutListsUnmet: at the deadline, Wait's error lists exactly the
// requirements not met, each with its reason, and none of those that are.
func TestTimeoutListsUnmet(t *testing.T) {
	a, c := server(t)
	cs, err := a.Clientset()
	require.NoError(t, err)
	ctx := context.Background()

	// Met: the CRD, typha's role, calico-node's binding. Unmet: the object
	// (absent), typha's permission (its binding names another namespace's
	// ServiceAccount), a role that does not exist, a role whose rules fall
	// short, and typha's binding (the wrong subject).
	create(t, c.Dynamic, crdGVR, calicoCRD("clusterinformations", "ClusterInformation"))
	_, err = cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "calico-typha"}, Rules: typhaRules}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "calico-node"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"crd.projectcalico.org"}, Resources: []string{"clusterinformations"}, Verbs: []string{"get"}}}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "calico-node"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "calico-node"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "kube-system", Name: "calico-node"}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "calico-typha"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "calico-typha"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "calico-system", Name: "calico-typha"}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	reqs := append(calicoRequirements("default"),
		cnibootstrap.ClusterRoleExists{Role: "calico-kube-controllers"},
		cnibootstrap.ClusterRoleExists{Role: "calico-node", Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{"crd.projectcalico.org"}, Resources: []string{"clusterinformations"}, Verbs: []string{"get", "create"}}}},
		cnibootstrap.ClusterRoleBindingExists{Binding: "calico-node", Role: "calico-node",
			Subject: rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: "kube-system", Name: "calico-node"}},
		cnibootstrap.ClusterRoleBindingExists{Binding: "calico-typha", Role: "calico-typha",
			Subject: rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: "kube-system", Name: "calico-typha"}},
	)
	want := []string{
		"clusterinformations.crd.projectcalico.org/v1 default: not found",
		"system:serviceaccount:kube-system:calico-typha cannot list clusterinformations.crd.projectcalico.org",
		"clusterrole calico-kube-controllers: not found",
		"clusterrole calico-node: does not grant create clusterinformations.crd.projectcalico.org",
		"clusterrolebinding calico-typha: has no subject ServiceAccount kube-system/calico-typha",
	}

	// Let the server settle first (Check answers from the same server
	// state), so that the deadline is the only thing under test.
	w, err := cnibootstrap.New(c, reqs, testBackoff())
	require.NoError(t, err)
	testenv.Eventually(t, guard, 100*time.Millisecond, func() error {
		var ue *cnibootstrap.UnmetError
		if err := w.Check(ctx); !errors.As(err, &ue) || !slices.Equal(lines(ue), want) {
			return fmt.Errorf("Check: %v", err)
		}
		return nil
	})

	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err = w.Wait(dctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var ue *cnibootstrap.UnmetError
	require.ErrorAs(t, err, &ue)
	assert.Equal(t, want, lines(ue))
	assert.Equal(t, len(reqs), ue.Total)
	assert.Contains(t, err.Error(), "5 of 8 requirements not met (context deadline exceeded): "+strings.Join(want, "; "))
}

func lines(ue *cnibootstrap.UnmetError) []string {
	s := make([]string, len(ue.Unmet))
	for i, u := range ue.Unmet {
		s[i] = u.String()
	}
	return s
}

// TestNoPollingWhileCRDNotEstablished: while an object's resource is not
// served because its CRD exists but is not established, the waiter waits
// for that CRD's events only: no busy loop and no floor retries (the
// backoff is never consulted and the resource is listed once). When the
// CRD is established, the object's watch starts by itself.
func TestNoPollingWhileCRDNotEstablished(t *testing.T) {
	a, admin := server(t)
	create(t, admin.Dynamic, crdGVR, calicoCRD("clusterinformations", "ClusterInformation"))
	create(t, admin.Dynamic, crdGVR, calicoCRD("clusterinformationalts", "ClusterInformation"))
	altGVR := clusterInformationGVR.GroupVersion().WithResource("clusterinformationalts")

	var lists atomic.Int64
	cfg := a.Config()
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(req *http.Request) (*http.Response, error) {
			if strings.HasSuffix(req.URL.Path, "/clusterinformationalts") && req.URL.Query().Get("watch") != "true" {
				lists.Add(1)
			}
			return rt.RoundTrip(req)
		})
	}
	c, err := cnibootstrap.NewClients(cfg)
	require.NoError(t, err)
	// The floor, if consulted during the first phase, would say "in an
	// hour" and be counted.
	var phase1 atomic.Bool
	floorCalls := &perPolicyCalls{}
	phase1.Store(true)
	rec := newRecorder()
	w, err := cnibootstrap.New(c, []cnibootstrap.Requirement{cnibootstrap.ObjectExists{GVR: altGVR, Object: "x"}},
		cnibootstrap.WithProgress(rec.progress),
		cnibootstrap.WithBackoff(func() backoff.BackOff {
			return countingBackoff{calls: floorCalls, id: floorCalls.newID(), phase1: &phase1}
		}))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*guard)
	defer cancel()
	errc := waitAsync(ctx, w)

	const name = "clusterinformationalts.crd.projectcalico.org/v1 x"
	require.NoError(t, rec.await("saying why the resource is not served", func(u []cnibootstrap.Unmet) bool {
		return reason(u, name) == `resource not served: crd clusterinformationalts.crd.projectcalico.org Established=False (NotAccepted), NamesAccepted=False (ListKindConflict: "ClusterInformationList" is already in use)`
	}))
	// An absence cannot be awaited: watch for activity for a while.
	time.Sleep(time.Second)
	// One policy, the credential check's, is consulted once (it then
	// sleeps for the hour); the object's own floor never is.
	assert.LessOrEqual(t, floorCalls.consulted(), 1, "policies consulted while only the CRD's events can help")
	assert.LessOrEqual(t, floorCalls.max(), 1, "most calls of one policy")
	assert.EqualValues(t, 1, lists.Load(), "lists of the unserved resource")

	phase1.Store(false)
	require.NoError(t, admin.Dynamic.Resource(crdGVR).Delete(ctx, clusterInformationCRD, metav1.DeleteOptions{}))
	require.NoError(t, rec.await("with the object's watch started", func(u []cnibootstrap.Unmet) bool {
		return reason(u, name) == "not found"
	}))
	obj := clusterInformation("x", true)
	obj.SetKind("ClusterInformation")
	// The CRD's handler can lag its Established condition by a moment.
	testenv.Eventually(t, guard, 50*time.Millisecond, func() error {
		_, err := admin.Dynamic.Resource(altGVR).Create(ctx, obj, metav1.CreateOptions{})
		if apierrors.IsNotFound(err) {
			return err
		}
		require.NoError(t, err)
		return nil
	})
	require.NoError(t, result(t, errc))
}

// countingBackoff counts, per policy, the NextBackOff calls made while
// phase1 is set and then answers an hour; afterwards it answers 50 ms.
type countingBackoff struct {
	calls  *perPolicyCalls
	id     int
	phase1 *atomic.Bool
}

func (b countingBackoff) NextBackOff() time.Duration {
	if b.phase1.Load() {
		b.calls.add(b.id)
		return time.Hour
	}
	return 50 * time.Millisecond
}

func (countingBackoff) Reset() {}

// perPolicyCalls counts calls by policy.
type perPolicyCalls struct {
	mu     sync.Mutex
	nextID int
	calls  map[int]int
}

func (p *perPolicyCalls) newID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nextID++
	return p.nextID
}

func (p *perPolicyCalls) add(id int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.calls == nil {
		p.calls = map[int]int{}
	}
	p.calls[id]++
}

// consulted is the number of policies called at least once.
func (p *perPolicyCalls) consulted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.calls)
}

// max is the largest number of calls of one policy.
func (p *perPolicyCalls) max() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := 0
	for _, n := range p.calls {
		m = max(m, n)
	}
	return m
}
