package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeboot/kubeboot/cnibootstrap"
	"github.com/kubeboot/kubeboot/examples/internal/ingress"
	"github.com/kubeboot/kubeboot/hooks"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.c != nil {
		shared.c.close()
	}
	if code == 0 {
		if err := goleak.Find(testenv.LeakOptions()...); err != nil {
			os.Stderr.WriteString("goleak: " + err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}

// The tests share one apiserver, controller-manager, scheduler and two
// hollow kubelets, started by the first test that asks and stopped by
// TestMain before goleak looks; each test installs the add-on in a
// namespace of its own (the webhook configuration is per namespace).
var shared struct {
	once sync.Once
	c    *cluster
	err  error
}

const testNodes = 2

func sharedCluster(t *testing.T) *cluster {
	t.Helper()
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		defer cancel()
		shared.c, shared.err = startCluster(ctx, testNodes, &testenv.SyncBuffer{})
	})
	if shared.err != nil {
		t.Fatalf("cluster: %v", shared.err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kube-apiserver log tail:\n%s", shared.c.api.LogTail(30))
			t.Logf("control plane log tails:\n%s", shared.c.cp.LogTail(30))
		}
	})
	return shared.c
}

// namespace creates a namespace for the test and deletes it at cleanup.
func namespace(t *testing.T, c *cluster) string {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := strings.ToLower(t.Name()) + "-" + hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := c.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.kube.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(ctx, ingress.Admission+"-"+name, metav1.DeleteOptions{})
		_ = c.kube.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
	})
	return name
}

// TestIngressUpgradeOrder replays the RKE2 ingress-nginx upgrade (rke2
// #7652) as it should have gone: v1 installed, then upgraded to v2 by the
// hooks graph. The evidence comes from outside the waits that gate the
// hooks — the cluster read as each hook starts, the test's own reads, and
// the webhook servers' request logs: each gate held its hook while its
// condition was false; the controller was not touched before the v2
// default backend was the only one and ready; no v1 controller pod was left
// (not even terminating) when the webhook was handed over; the v2 webhook
// server answered the gate's dry-run before any Ingress was applied, and
// validated every Ingress itself.
func TestIngressUpgradeOrder(t *testing.T) {
	c := sharedCluster(t)
	ns := namespace(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var out testenv.SyncBuffer
	o, err := scenario(ctx, c, ns, config{nodes: testNodes, gateTimeout: ingress.DefaultGateTimeout}, &out)
	if o != nil {
		defer o.close()
	}
	t.Logf("timeline:\n%s", out.String())
	require.NoError(t, err)

	// v1 was installed through the same graph, validated by v1's webhook.
	for _, name := range ingress.Ingresses {
		assert.True(t, called(o.install.Calls, "v1", name, "CREATE"), "v1 webhook did not admit the creation of %s: %v", name, o.install.Calls)
	}

	up := o.upgrade
	assert.Equal(t, ingress.Hooks, up.Started(), "hooks in start order")
	for _, h := range up.Report.Hooks {
		assert.Equal(t, hooks.Succeeded, h.State, "hook %s", h.Name)
	}
	// Each gate held its hook back while its condition was false.
	assert.Contains(t, up.Held[ingress.HookDefaultBackend], "job "+ns+"/"+ingress.ChartJob+" complete: not complete")
	assert.Contains(t, up.Held[ingress.HookController], "deployment "+ns+"/"+ingress.Backend+" rolled out")
	assert.Contains(t, up.Held[ingress.HookWebhook], "daemonset "+ns+"/"+ingress.Controller+" rolled out")

	// As default-backend started: the v2 Job complete, nothing else touched.
	s := up.Snapshots[ingress.HookDefaultBackend]
	assert.Equal(t, "v2", s.JobVersion)
	assert.True(t, s.JobComplete, "install Job complete as default-backend started: %s", s)
	assert.Zero(t, s.Backend["v2"].Live, "v2 backend pods before the backend hook: %s", s)
	assert.Equal(t, testNodes, s.Controller["v1"].Ready, "v1 controller serving: %s", s)

	// As controller started: only the v2 backend left, ready; the v1
	// controller still serving on every node (not touched yet).
	s = up.Snapshots[ingress.HookController]
	assert.Zero(t, s.Backend["v1"].Live, "v1 backend pods (terminating included) as controller started: %s", s)
	assert.Equal(t, 1, s.Backend["v2"].Ready, "v2 backend ready as controller started: %s", s)
	assert.Equal(t, testNodes, s.Controller["v1"].Ready, "v1 controller as controller started: %s", s)
	assert.Zero(t, s.Controller["v2"].Live, "v2 controller pods as controller started: %s", s)

	// As webhook started: no v1 controller pod at all, v2 ready everywhere;
	// the webhook still v1's.
	s = up.Snapshots[ingress.HookWebhook]
	assert.Zero(t, s.Controller["v1"].Live, "v1 controller pods (terminating included) as webhook started: %s", s)
	assert.Equal(t, testNodes, s.Controller["v2"].Ready, "v2 controller ready as webhook started: %s", s)
	assert.Equal(t, testNodes, s.Controller["v2"].Nodes, "v2 controller on every node: %s", s)
	assert.Equal(t, "v1", s.WebhookVersion)

	// As ingresses started: the v2 webhook had answered the gate's dry-run
	// (its own log says so), and no Ingress had been applied at v2.
	s = up.Snapshots[ingress.HookIngresses]
	assert.Equal(t, "v2", s.WebhookVersion)
	var probe *ingress.Call
	for i, call := range up.Calls {
		if call.Server == "v2" && call.DryRun && call.Name == ingress.Probe {
			probe = &up.Calls[i]
			break
		}
	}
	require.NotNil(t, probe, "the v2 webhook server never saw the dry-run probe: %v", up.Calls)
	assert.False(t, probe.At.After(s.At), "the first dry-run reached the v2 webhook after the ingresses hook started")
	for name, v := range s.Ingresses {
		assert.Equal(t, "v1", v, "ingress %s as the ingresses hook started", name)
	}
	// Every Ingress was validated by the v2 webhook, after the probe.
	for _, name := range ingress.Ingresses {
		assert.True(t, called(up.Calls, "v2", name, "UPDATE"), "v2 webhook did not admit the update of %s: %v", name, up.Calls)
	}
	for _, call := range up.Calls {
		assert.Equal(t, "v2", call.Server, "an admission request of the upgrade went to the %s server: %+v", call.Server, call)
	}

	// The test's own reads of the end state.
	for _, name := range ingress.Ingresses {
		ing, err := c.kube.NetworkingV1().Ingresses(ns).Get(ctx, name, metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, "v2", ing.Labels[ingress.LabelVersion], "ingress %s", name)
	}
	pods, err := c.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: ingress.LabelComponent + "=controller"})
	require.NoError(t, err)
	assert.Len(t, pods.Items, testNodes, "controller pods")
	for _, p := range pods.Items {
		assert.Equal(t, "v2", p.Labels[ingress.LabelVersion], "controller pod %s", p.Name)
	}
	// The webhook in the apiserver's path is v2's, and it validates: an
	// Ingress of another class is denied by it.
	other := "traefik"
	bad := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: "other-class", Namespace: ns},
		Spec: networkingv1.IngressSpec{IngressClassName: &other, DefaultBackend: &networkingv1.IngressBackend{
			Service: &networkingv1.IngressServiceBackend{Name: ingress.Backend, Port: networkingv1.ServiceBackendPort{Number: 80}}}}}
	_, err = c.kube.NetworkingV1().Ingresses(ns).Create(ctx, bad, metav1.CreateOptions{})
	require.ErrorContains(t, err, "denied the request")
	require.ErrorContains(t, err, `ingressClassName must be "nginx"`)
}

// called reports whether server admitted a non-dry-run op of the Ingress.
func called(calls []ingress.Call, server, name, op string) bool {
	for _, c := range calls {
		if c.Server == server && c.Name == name && c.Operation == op && !c.DryRun && c.Allowed {
			return true
		}
	}
	return false
}

// TestBadChartFailsFast replays the trigger of rke2 #7652: the v2 chart
// fails to render, so its helm-install Job fails every attempt under
// helm-controller's backoffLimit of 1000 and never says Failed. The wait
// for it ends on its second failure with the Job's *FailedError — naming
// the Job and its failures, with the container's exit code — well before
// the gate's 5-minute timeout (the error is not a deadline and the test's
// context is alive), and nothing after it runs: no hook past
// install-chart started, and the test's own reads find the default
// backend, the controller, the webhook configuration and the Ingresses
// exactly as v1 left them, with v1 pods ready and no admission request
// made.
func TestBadChartFailsFast(t *testing.T) {
	c := sharedCluster(t)
	ns := namespace(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var out testenv.SyncBuffer
	o, err := scenario(ctx, c, ns, config{nodes: testNodes, badChart: true, gateTimeout: ingress.DefaultGateTimeout}, &out)
	if o != nil {
		defer o.close()
	}
	t.Logf("timeline:\n%s", out.String())
	require.Error(t, err)
	require.NotNil(t, o.upgrade, "the scenario failed before the upgrade: %v", err)
	require.NoError(t, ctx.Err(), "the test's context ended")

	var fe *cnibootstrap.FailedError
	require.ErrorAs(t, err, &fe, "%v", err)
	require.ErrorIs(t, err, cnibootstrap.ErrFailed)
	assert.NotErrorIs(t, err, context.DeadlineExceeded, "the wait ended at a deadline")
	assert.Equal(t, "Job", fe.Kind)
	assert.Equal(t, ns, fe.Namespace)
	assert.Equal(t, ingress.ChartJob, fe.Name)
	assert.Equal(t, "FailAfter", fe.Reason)
	assert.Contains(t, fe.Message, "2 failures")
	assert.Contains(t, fe.Message, "container helm of pod "+ingress.ChartJob+"-")
	assert.Contains(t, fe.Message, "exited with code 1")
	assert.Contains(t, err.Error(), `hook "`+ingress.HookDefaultBackend+`" failed: gate: `)
	t.Logf("upgrade: %v", err)

	up := o.upgrade
	assert.Equal(t, []string{ingress.HookInstallChart}, up.Started(), "hooks that started")
	for _, h := range up.Report.Hooks {
		switch h.Name {
		case ingress.HookInstallChart:
			assert.Equal(t, hooks.Succeeded, h.State)
		case ingress.HookDefaultBackend:
			assert.Equal(t, hooks.Failed, h.State)
			assert.Zero(t, h.Attempts, "default-backend ran")
		default:
			assert.Equal(t, hooks.Skipped, h.State, "hook %s", h.Name)
			assert.Zero(t, h.Attempts, "hook %s ran", h.Name)
		}
	}
	assert.Empty(t, up.Calls, "admission requests during the failed upgrade")

	// The test's own reads: the Job is failing with the chart's exit
	// code, and v1 is untouched.
	job, err := c.kube.BatchV1().Jobs(ns).Get(ctx, ingress.ChartJob, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "v2", job.Labels[ingress.LabelVersion])
	assert.EqualValues(t, 1000, *job.Spec.BackoffLimit)
	for _, cond := range job.Status.Conditions {
		assert.False(t, cond.Type == batchv1.JobComplete && cond.Status == corev1.ConditionTrue, "the bad Job completed")
	}
	jobPods, err := c.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: batchv1.ControllerUidLabel + "=" + string(job.UID)})
	require.NoError(t, err)
	restarts, exit := 0, int32(0)
	for _, p := range jobPods.Items {
		for _, cs := range p.Status.ContainerStatuses {
			restarts += int(cs.RestartCount)
			for _, term := range []*corev1.ContainerStateTerminated{cs.LastTerminationState.Terminated, cs.State.Terminated} {
				if term != nil {
					exit = max(exit, term.ExitCode)
				}
			}
		}
	}
	assert.GreaterOrEqual(t, restarts, 1, "the Job's container was restarted after failing")
	assert.EqualValues(t, 1, exit, "the Job's container exit code")

	before := o.install.After
	dep, err := c.kube.AppsV1().Deployments(ns).Get(ctx, ingress.Backend, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, before.BackendGeneration, dep.Generation, "the default backend was changed")
	assert.Equal(t, "v1", dep.Spec.Template.Labels[ingress.LabelVersion])
	ds, err := c.kube.AppsV1().DaemonSets(ns).Get(ctx, ingress.Controller, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, before.ControllerGeneration, ds.Generation, "the controller was changed")
	assert.Equal(t, "v1", ds.Spec.Template.Labels[ingress.LabelVersion])
	cfg, err := c.kube.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, ingress.Admission+"-"+ns, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "v1", cfg.Labels[ingress.LabelVersion])
	pods, err := c.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: ingress.LabelName + "=" + ingress.Chart})
	require.NoError(t, err)
	for _, p := range pods.Items {
		if p.Labels[ingress.LabelComponent] != "helm-install" {
			assert.Equal(t, "v1", p.Labels[ingress.LabelVersion], "pod %s", p.Name)
		}
	}
	for _, name := range ingress.Ingresses {
		ing, err := c.kube.NetworkingV1().Ingresses(ns).Get(ctx, name, metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, "v1", ing.Labels[ingress.LabelVersion], "ingress %s", name)
	}
	assert.Equal(t, testNodes, up.After.Controller["v1"].Ready, "v1 controller ready after the failed upgrade: %s", up.After)
}

func TestParseFlags(t *testing.T) {
	c, err := parse(nil, &testenv.SyncBuffer{})
	require.NoError(t, err)
	assert.Equal(t, config{nodes: 3, gateTimeout: ingress.DefaultGateTimeout}, c)
	c, err = parse([]string{"--nodes", "2", "--bad-chart", "--gate-timeout", "1m"}, &testenv.SyncBuffer{})
	require.NoError(t, err)
	assert.Equal(t, config{nodes: 2, badChart: true, gateTimeout: time.Minute}, c)
	_, err = parse([]string{"--help"}, &testenv.SyncBuffer{})
	assert.ErrorIs(t, err, flag.ErrHelp)
	for _, args := range [][]string{{"--nodes", "0"}, {"--gate-timeout", "0s"}, {"--nope"}, {"extra"}} {
		_, err := parse(args, &testenv.SyncBuffer{})
		assert.True(t, errors.Is(err, errUsage), "parse(%v) = %v, want a usage error", args, err)
	}
}
