package readiness_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubeboot/kubeboot/internal/testenv"
	"github.com/kubeboot/kubeboot/readiness"
)

// kubeletRules is the documented RBAC rule of KubeletStaticPodReady,
// limited to one node.
func kubeletRules(node string) []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{{
		APIGroups: []string{""}, Resources: []string{"nodes/pods"}, Verbs: []string{"get"}, ResourceNames: []string{node},
	}}
}

// kubeletUser issues a client certificate for user (no groups) from the
// apiserver's CA, which the hollow kubelet trusts, and returns an
// *http.Client presenting it, made from a *rest.Config by
// rest.HTTPClientFor as the documentation says.
func kubeletUser(t testing.TB, a *testenv.APIServer, user string) *http.Client {
	t.Helper()
	pair, err := a.CA().Issue(t.TempDir(), filepath.Base(user), user)
	require.NoError(t, err)
	// Data, not file names: for files, client-go starts a goroutine that
	// reloads them for the rest of the process.
	cert, err := os.ReadFile(pair.CertFile)
	require.NoError(t, err)
	key, err := os.ReadFile(pair.KeyFile)
	require.NoError(t, err)
	hc, err := rest.HTTPClientFor(&rest.Config{TLSClientConfig: rest.TLSClientConfig{
		CertData: cert, KeyData: key, CAData: a.CA().PEM(),
	}})
	require.NoError(t, err)
	t.Cleanup(hc.CloseIdleConnections)
	return hc
}

// bindUser creates a ClusterRole with rules and binds it to the user
// (not a ServiceAccount), then waits until the apiserver's authorizer
// allows what the kubelet will ask for /pods, so that the kubelet never
// caches a deny for it.
func bindUser(ctx context.Context, t testing.TB, cs kubernetes.Interface, user, node string, rules []rbacv1.PolicyRule) {
	t.Helper()
	bindUserFor(ctx, t, cs, user, node, "pods", rules)
}

// bindUserFor is bindUser awaiting the allow for nodes/<subresource>.
func bindUserFor(ctx context.Context, t testing.TB, cs kubernetes.Interface, user, node, subresource string, rules []rbacv1.PolicyRule) {
	t.Helper()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: user}, Rules: rules}
	_, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{})
	require.NoError(t, err)
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: user},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: user},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}
	_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{})
	require.NoError(t, err)
	testenv.Eventually(t, 30*time.Second, 50*time.Millisecond, func() error {
		sar, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:               user,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: "get", Version: "v1", Resource: "nodes", Subresource: subresource, Name: node},
		}}, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		if !sar.Status.Allowed {
			return fmt.Errorf("%s may not get nodes/%s %s yet", user, subresource, node)
		}
		return nil
	})
}

// kubeletPods reads GET /pods from the kubelet, as the check does.
func kubeletPod(ctx context.Context, t testing.TB, hc *http.Client, kubeletURL, ns, name string) *corev1.Pod {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, kubeletURL+"/pods", nil)
	require.NoError(t, err)
	resp, err := hc.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var list corev1.PodList
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&list))
	for i := range list.Items {
		if p := &list.Items[i]; p.Namespace == ns && p.Name == name {
			return p
		}
	}
	t.Fatalf("the kubelet runs no pod %s/%s", ns, name)
	return nil
}

// The kube-apiserver is stopped; a static pod's manifest on the node is
// rewritten; KubeletStaticPodReady, reading the node's own kubelet with a
// client certificate, first rejects the old pod, then reports the new one
// Ready with its hash changed — while the apiserver is still down, where
// StaticPodReady can only say it is unreachable. Meanwhile, as
// documented: a caller the kubelet has no cached authorization for gets
// its "Authorization error"; a caller granted only nodes/proxy gets it
// too once the kubelet's cached deny of nodes/pods has expired, while the
// caller granted nodes/pods keeps its answers.
func TestStaticPodReadyFromKubeletWhileAPIServerDown(t *testing.T) {
	testenv.AwaitNoLeaks(t)
	a := testenv.NewAPIServer(t)
	n := newNode(t, a, "node1")
	ctx := testCtx(t)
	admin, err := a.Clientset()
	require.NoError(t, err)
	const user = "kubeboot-readiness"
	hc := kubeletUser(t, a, user)
	bindUser(ctx, t, admin, user, n.Name(), kubeletRules(n.Name()))

	// A caller granted only nodes/proxy, which kubelets before 1.33 ask
	// for.
	const proxyUser = "kubeboot-proxy-only"
	proxyOnly := kubeletUser(t, a, proxyUser)
	bindUserFor(ctx, t, admin, proxyUser, n.Name(), "proxy", []rbacv1.PolicyRule{{
		APIGroups: []string{""}, Resources: []string{"nodes/proxy"}, Verbs: []string{"get"}, ResourceNames: []string{n.Name()},
	}})

	// The old pod runs, Ready, seen by both sources. The kubelet check's
	// answers also put the kubelet's decisions for both callers in its
	// cache.
	require.NoError(t, n.WriteStaticPod(staticPod("kube-apiserver", "registry.k8s.io/kube-apiserver:v1.31.8", nil, "")))
	old := awaitPod(ctx, t, admin, podNS, podName, readyMirror(""))
	oldHash := old.Annotations[hashAnnotation]
	require.NoError(t, readiness.Wait(ctx, readiness.KubeletStaticPodReady(hc, n.URL(), podNS, podName, readiness.WithExpectedHash(oldHash))))
	require.NoError(t, readiness.KubeletStaticPodReady(proxyOnly, n.URL(), podNS, podName, readiness.WithExpectedHash(oldHash)).Check(ctx))

	// The apiserver goes away; the apiserver source cannot answer.
	require.NoError(t, a.Stop())
	err = readiness.StaticPodReady(admin, podNS, podName).Check(ctx)
	require.ErrorIs(t, err, readiness.ErrUnreachable)

	check := readiness.KubeletStaticPodReady(hc, n.URL(), podNS, podName, readiness.WithHashChangedFrom(oldHash))
	opt, attempts := observer()
	done := goWait(ctx, check, opt, readiness.WithStability(2, time.Second))
	first := awaitAttempt(t, attempts, done, "the old pod is rejected", failsWith("is still the old one"))
	assert.Equal(t, "static pod kube-system/kube-apiserver-node1 on the kubelet at "+n.URL()+": config hash "+oldHash+" is still the old one", first.Err.Error())

	// The manifest is rewritten with the apiserver down.
	require.NoError(t, n.WriteStaticPod(staticPod("kube-apiserver", "registry.k8s.io/kube-apiserver:v1.31.9", nil, "")))
	require.NoError(t, awaitDone(t, done, "the new pod ready on the kubelet"))
	close(attempts)
	var reasons []string
	for a := range attempts {
		if a.Err != nil {
			reasons = append(reasons, a.Err.Error())
		}
	}
	t.Logf("failed attempts while the kubelet replaced the pod:\n%s", strings.Join(reasons, "\n"))
	require.False(t, a.Running(), "the apiserver is still down")

	// What the kubelet runs now is the new pod, Ready.
	pod := kubeletPod(ctx, t, hc, n.URL(), podNS, podName)
	assert.NotEqual(t, oldHash, pod.Annotations[hashAnnotation])
	assert.Equal(t, "file", pod.Annotations["kubernetes.io/config.source"])
	assert.True(t, podIsReady(pod), "status: %+v", pod.Status)
	err = readiness.StaticPodReady(admin, podNS, podName).Check(ctx)
	require.ErrorIs(t, err, readiness.ErrUnreachable, "the apiserver is still down")

	// A caller whose allow the kubelet has not cached cannot be
	// authorized while the apiserver is down.
	stranger := kubeletUser(t, a, "kubeboot-stranger")
	began := time.Now()
	err = readiness.KubeletStaticPodReady(stranger, n.URL(), podNS, podName).Check(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "HTTP 500: Authorization error (user=kubeboot-stranger, verb=get, resource=nodes, subresource=pods)")
	assert.Contains(t, err.Error(), "no cached decision")
	t.Logf("uncached caller, answered in %s: %v", time.Since(began).Round(time.Millisecond), err)

	// Granted only nodes/proxy, a caller loses the kubelet once its
	// cached deny for "pods" (30 s) has expired: the kubelet's question
	// about "pods" then fails and ends the request. Granted nodes/pods,
	// the allow is cached for 5 minutes.
	testenv.Eventually(t, guard, 500*time.Millisecond, func() error {
		err := readiness.KubeletStaticPodReady(proxyOnly, n.URL(), podNS, podName).Check(ctx)
		if err == nil || !strings.Contains(err.Error(), "HTTP 500: Authorization error (user="+proxyUser+", verb=get, resource=nodes, subresource=pods)") {
			return fmt.Errorf("the nodes/proxy-only caller still gets an answer from the kubelet: %v", err)
		}
		return nil
	})
	require.NoError(t, readiness.KubeletStaticPodReady(hc, n.URL(), podNS, podName, readiness.WithHashChangedFrom(oldHash)).Check(ctx))
	require.False(t, a.Running(), "the apiserver is still down")
}

// KubeletStaticPodReady on a real kubelet under exactly the documented
// rule (get on nodes/pods, this node only): an unbound caller is told it
// is an access problem; a bound one waits through not Ready to Ready; a
// pod from the apiserver is not a static pod; a missing pod is named; the
// read-only port needs no credentials.
func TestKubeletStaticPodReadyLeastPrivilege(t *testing.T) {
	testenv.AwaitNoLeaks(t)
	a := testenv.NewAPIServer(t)
	n := newNode(t, a, "node1")
	ctx := testCtx(t)
	admin, err := a.Clientset()
	require.NoError(t, err)
	probe := newProbeServer(t)
	require.NoError(t, n.WriteStaticPod(staticPod("kube-apiserver", "registry.k8s.io/kube-apiserver:v1.36.3", probe, "/readyz")))
	mirror := awaitPod(ctx, t, admin, podNS, podName, func(p *corev1.Pod) error {
		if p == nil || p.Status.Phase != corev1.PodRunning {
			return errors.New("mirror pod not there or not Running")
		}
		return nil
	})
	hash := mirror.Annotations[hashAnnotation]

	// Unbound: 403, an access problem naming what the kubelet asked for.
	nobody := kubeletUser(t, a, "kubeboot-nobody")
	err = readiness.KubeletStaticPodReady(nobody, n.URL(), podNS, podName).Check(ctx)
	require.ErrorIs(t, err, readiness.ErrAccessDenied)
	assert.Contains(t, err.Error(), "HTTP 403")
	assert.Contains(t, err.Error(), "subresource(s)=[pods proxy]")
	t.Logf("unbound: %v", err)

	// Bound to the rule: the whole wait, polled.
	const user = "kubeboot-readiness"
	reader := kubeletUser(t, a, user)
	bindUser(ctx, t, admin, user, n.Name(), kubeletRules(n.Name()))
	check := readiness.KubeletStaticPodReady(reader, n.URL(), podNS, podName, readiness.WithExpectedHash(hash))
	opt, attempts := observer()
	done := goWait(ctx, check, opt)
	notReady := awaitAttempt(t, attempts, done, "the pod is not ready", failsWith("condition Ready is False"))
	assert.NotContains(t, notReady.Err.Error(), "static pod (")
	probe.set("/readyz", true)
	require.NoError(t, awaitDone(t, done, "pod ready"))

	// A pod the kubelet got from the apiserver is not a static pod.
	plain := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "plain", Namespace: podNS},
		Spec: corev1.PodSpec{NodeName: n.Name(), TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}}},
	}
	_, err = admin.CoreV1().Pods(podNS).Create(ctx, plain, metav1.CreateOptions{})
	require.NoError(t, err)
	plainCheck := readiness.KubeletStaticPodReady(reader, n.URL(), podNS, "plain")
	// The kubelet has no watch: poll until it runs the pod.
	testenv.Eventually(t, guard, 100*time.Millisecond, func() error {
		if err := plainCheck.Check(ctx); err == nil || !strings.Contains(err.Error(), "phase") && !strings.Contains(err.Error(), "not a static pod") {
			return fmt.Errorf("want the kubelet to run the pod: %v", err)
		}
		return nil
	})
	err = plainCheck.Check(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `static pod kube-system/plain on the kubelet at `+n.URL()+`: not a static pod (kubernetes.io/config.source is "api")`)

	err = readiness.KubeletStaticPodReady(reader, n.URL(), podNS, "etcd-node1").Check(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "static pod kube-system/etcd-node1 on the kubelet at "+n.URL()+": not found among the ")

	// The read-only port: plain http, no credentials.
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	require.NoError(t, readiness.KubeletStaticPodReady(&http.Client{Transport: tr}, n.ReadOnlyURL(), podNS, podName, readiness.WithExpectedHash(hash)).Check(ctx))
}

func TestKubeletStaticPodReadyBadInput(t *testing.T) {
	ctx := testCtx(t)
	var called atomic.Int32
	hc := &http.Client{Transport: roundTripFunc(func(*http.Request) (*http.Response, error) {
		called.Add(1)
		return nil, errors.New("never dialled")
	})}
	const url = "https://127.0.0.1:10250"
	for name, tt := range map[string]struct {
		check readiness.Check
		want  string
	}{
		"nil client":          {readiness.KubeletStaticPodReady(nil, url, podNS, podName), "KubeletStaticPodReady: nil *http.Client"},
		"empty URL":           {readiness.KubeletStaticPodReady(hc, "", podNS, podName), "KubeletStaticPodReady: empty kubelet URL"},
		"relative URL":        {readiness.KubeletStaticPodReady(hc, "/pods", podNS, podName), "is not an absolute http or https URL"},
		"other scheme":        {readiness.KubeletStaticPodReady(hc, "unix:///var/run/kubelet.sock", podNS, podName), "is not an absolute http or https URL"},
		"port out of range":   {readiness.KubeletStaticPodReady(hc, "https://127.0.0.1:99999", podNS, podName), "port 99999 is out of range"},
		"bad host":            {readiness.KubeletStaticPodReady(hc, "https://bad host:10250", podNS, podName), "malformed kubelet URL"},
		"user info":           {readiness.KubeletStaticPodReady(hc, "https://u:p@127.0.0.1:10250", podNS, podName), "want scheme, host, port and an optional path only"},
		"query":               {readiness.KubeletStaticPodReady(hc, url+"/?x=1", podNS, podName), "want scheme, host, port and an optional path only"},
		"fragment":            {readiness.KubeletStaticPodReady(hc, url+"#pods", podNS, podName), "want scheme, host, port and an optional path only"},
		"empty namespace":     {readiness.KubeletStaticPodReady(hc, url, "", podName), "KubeletStaticPodReady: empty namespace"},
		"empty name":          {readiness.KubeletStaticPodReady(hc, url, podNS, ""), "KubeletStaticPodReady: empty pod name"},
		"empty expected hash": {readiness.KubeletStaticPodReady(hc, url, podNS, podName, readiness.WithExpectedHash("")), "KubeletStaticPodReady: WithExpectedHash: empty hash"},
		"empty old hash":      {readiness.KubeletStaticPodReady(hc, url, podNS, podName, readiness.WithHashChangedFrom("")), "KubeletStaticPodReady: WithHashChangedFrom: empty hash"},
		"nil option":          {readiness.KubeletStaticPodReady(hc, url, podNS, podName, nil), "KubeletStaticPodReady: option 1 is nil"},
	} {
		t.Run(name, func(t *testing.T) {
			err := readiness.Wait(ctx, tt.check)
			require.ErrorIs(t, err, readiness.ErrInvalid)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
	assert.Zero(t, called.Load(), "bad input makes no request")
}

// staticPodJSON is a static pod as a kubelet lists it in GET /pods.
func staticPodJSON(hash string, ready bool) corev1.Pod {
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: podName, Namespace: podNS, UID: types.UID("uid-" + hash), Annotations: map[string]string{
			"kubernetes.io/config.hash": hash, "kubernetes.io/config.source": "file", "kubernetes.io/config.seen": "2025-01-01T00:00:00Z",
		}},
		Spec:   mirrorPod(hash).Spec,
		Status: podStatus(ready),
	}
}

// The kubelet's answers that a real kubelet does not give on cue, from a
// fake one (pure logic of the check): two pods of one name, which the
// kubelet lists at most for an instant while it swaps a static pod;
// garbage; other statuses. A path in the kubelet URL is kept as a prefix.
func TestKubeletStaticPodReadyAnswers(t *testing.T) {
	ctx := testCtx(t)
	var answer atomic.Value // func(http.ResponseWriter)
	var paths atomic.Value  // string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths.Store(r.URL.Path)
		answer.Load().(func(http.ResponseWriter))(w)
	}))
	defer srv.Close()
	list := func(pods ...corev1.Pod) func(http.ResponseWriter) {
		return func(w http.ResponseWriter) {
			_ = json.NewEncoder(w).Encode(&corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}, Items: pods})
		}
	}
	status := func(code int, body string) func(http.ResponseWriter) {
		return func(w http.ResponseWriter) { w.WriteHeader(code); _, _ = w.Write([]byte(body)) }
	}
	name := "static pod kube-system/kube-apiserver-node1 on the kubelet at " + srv.URL
	for _, tt := range []struct {
		name   string
		answer func(http.ResponseWriter)
		want   string // "" for ready
		is     error
	}{
		{"ready", list(staticPodJSON("new", true)), "", nil},
		{"not ready", list(staticPodJSON("new", false)), name + ": condition Ready is False; container kube-apiserver not ready (waiting: ContainerCreating)", nil},
		{"old", list(staticPodJSON("old", true)), name + ": config hash old is still the old one", nil},
		{"two of one name", list(staticPodJSON("old", true), staticPodJSON("new", true)), name + ": the kubelet lists 2 pods of that name", nil},
		{"none", list(), name + ": not found among the 0 pods the kubelet runs", nil},
		{"garbage", status(200, "<html>"), name + ": GET /pods: not a PodList: ", nil},
		{"forbidden", status(403, "Forbidden (user=x, verb=get, resource=nodes, subresource(s)=[pods proxy])\n"), name + ": GET /pods: HTTP 403: access denied", readiness.ErrAccessDenied},
		{"unauthorized", status(401, "Unauthorized\n"), name + ": GET /pods: HTTP 401: access denied", readiness.ErrAccessDenied},
		{"authorization error", status(500, "Authorization error (user=x, verb=get, resource=nodes, subresource=pods)"), name + ": GET /pods: HTTP 500: Authorization error (user=x, verb=get, resource=nodes, subresource=pods) (the kubelet could not ask the apiserver and had no cached decision for this caller)", nil},
		{"other status", status(503, "busy"), name + ": GET /pods: HTTP 503: busy", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			answer.Store(tt.answer)
			err := readiness.KubeletStaticPodReady(srv.Client(), srv.URL, podNS, podName, readiness.WithHashChangedFrom("old")).Check(ctx)
			assert.Equal(t, "/pods", paths.Load())
			if tt.want == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.True(t, strings.HasPrefix(err.Error(), tt.want), "got %q, want it to start with %q", err, tt.want)
			if tt.is != nil {
				assert.ErrorIs(t, err, tt.is)
			}
		})
	}

	// Through a path prefix (the apiserver's node proxy has this form).
	answer.Store(list(staticPodJSON("new", true)))
	require.NoError(t, readiness.KubeletStaticPodReady(srv.Client(), srv.URL+"/api/v1/nodes/node1/proxy/", podNS, podName).Check(ctx))
	assert.Equal(t, "/api/v1/nodes/node1/proxy/pods", paths.Load())

	// A dead kubelet is unreachable.
	srv.Close()
	err := readiness.KubeletStaticPodReady(srv.Client(), srv.URL, podNS, podName).Check(ctx)
	require.ErrorIs(t, err, readiness.ErrUnreachable)
}
