package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubeboot/kubeboot/apiserverdisco"
	"github.com/kubeboot/kubeboot/examples/internal/calico"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// The anchors' fixed intervals, as their code has them today.
const (
	kubeadmInterval     = 500 * time.Millisecond // promote loop, etcd health wait, /readyz wait
	kubeadmPromoteLimit = 2 * time.Minute        // the promote loop gives up after this
	k3sAddressPoll      = 5 * time.Second        // the agent re-reads the apiserver addresses
	rke2StaticPodPoll   = 20 * time.Second       // the static-pod check
	rke2ReadyzPoll      = 2 * time.Second        // then /readyz
	anchorRPCTimeout    = 2 * time.Second        // per etcd RPC, as the example's etcdmember.WithRPCTimeout
)

// BenchmarkBootstrap runs, in one process and on the same harness (embedded
// etcd members and the real kube-apiserver of internal/testenv, started the
// same way), the bootstrap composed with kubeboot — the example's own Run —
// and the same bootstrap composed the way kubeadm, k3s and RKE2 do it today
// (anchorBootstrap). It measures the wall time from "first etcd member up"
// to "every hook done", per phase, for both, and their ratio; without a
// fault, and with static-pod-upgrade (rke2 #8269) and promote-reply-lost
// (kubeadm #3317).
//
// Every iteration is a full fresh bootstrap of each. The figures are the
// medians over b.N iterations, reported as metrics; the built-in ns/op is
// suppressed, because Run's own etcd start and teardown, which are not part
// of the measured window, cannot be taken out of it from here.
func BenchmarkBootstrap(b *testing.B) {
	for _, fault := range []string{FaultNone, FaultStaticPodUpgrade, FaultPromoteReplyLost} {
		name := "fault=none"
		if fault != FaultNone {
			name = "fault=" + fault
		}
		b.Run(name, func(b *testing.B) {
			b.StopTimer()
			var kb, an []bootstrapFigures
			for i := 0; i < b.N; i++ {
				k, err := kubebootBootstrap(b, fault)
				if err != nil {
					b.Fatalf("kubeboot: %v", err)
				}
				a, err := anchorBootstrap(b, fault)
				if err != nil {
					b.Fatalf("anchor: %v", err)
				}
				kb, an = append(kb, k), append(an, a)
			}
			report(b, "kubeboot", kb)
			report(b, "anchor", an)
			ratios := make([]float64, len(kb))
			for i := range kb {
				ratios[i] = an[i].total().Seconds() / kb[i].total().Seconds()
			}
			b.ReportMetric(median(ratios), "anchor/kubeboot")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// Phase names, the same for both compositions.
const (
	phaseJoin      = "join"
	phaseAPIServer = "apiserver"
	phaseDiscovery = "discovery"
	phaseHooks     = "hooks"
)

var benchPhases = []string{phaseJoin, phaseAPIServer, phaseDiscovery, phaseHooks}

// bootstrapFigures is one bootstrap's measurements.
type bootstrapFigures struct {
	phases       map[string]time.Duration
	promoteRPCs  float64 // MemberPromote calls made
	hookAttempts float64 // hook runs, all hooks
	httpRequests float64 // to the kube-apiserver (-1: not countable)
	etcdRPCs     float64 // unary etcd RPCs (-1: not countable)
	failed       float64 // 1 when the bootstrap did not complete
}

func (f bootstrapFigures) total() time.Duration {
	var t time.Duration
	for _, d := range f.phases {
		t += d
	}
	return t
}

// report puts the medians of one composition's figures on the benchmark.
func report(b *testing.B, side string, figs []bootstrapFigures) {
	pick := func(get func(bootstrapFigures) float64) float64 {
		vs := make([]float64, len(figs))
		for i, f := range figs {
			vs[i] = get(f)
		}
		return median(vs)
	}
	for _, p := range benchPhases {
		b.ReportMetric(pick(func(f bootstrapFigures) float64 { return toMS(f.phases[p]) }), side+"-"+p+"-ms")
	}
	b.ReportMetric(pick(func(f bootstrapFigures) float64 { return toMS(f.total()) }), side+"-total-ms")
	b.ReportMetric(pick(func(f bootstrapFigures) float64 { return f.promoteRPCs }), side+"-promote-rpcs")
	b.ReportMetric(pick(func(f bootstrapFigures) float64 { return f.hookAttempts }), side+"-hook-attempts")
	if figs[0].httpRequests >= 0 {
		b.ReportMetric(pick(func(f bootstrapFigures) float64 { return f.httpRequests }), side+"-http-requests")
		b.ReportMetric(pick(func(f bootstrapFigures) float64 { return f.etcdRPCs }), side+"-etcd-rpcs")
	}
	b.ReportMetric(pick(func(f bootstrapFigures) float64 { return f.failed }), side+"-failed")
}

func toMS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// kubebootBootstrap runs the example's own Run (three members) and reads its
// phases: "etcd node1" is the first member starting and is left out, so the
// window runs from the first member up to the end of "bootstrap hooks".
// Run's HTTP requests and etcd RPCs cannot be counted without changing
// run.go; its MemberPromote RPCs are read from the join events and its hook
// attempts from the hooks report.
func kubebootBootstrap(b *testing.B, fault string) (bootstrapFigures, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := Run(ctx, Config{Members: 3, Fault: fault})
	if err != nil {
		return bootstrapFigures{}, err
	}
	names := map[string]string{"etcd join": phaseJoin, phaseControlPlane: phaseAPIServer, "address discovery": phaseDiscovery, "bootstrap hooks": phaseHooks}
	f := bootstrapFigures{phases: map[string]time.Duration{}, httpRequests: -1, etcdRPCs: -1}
	for _, p := range res.Phases {
		if n, ok := names[p.Name]; ok {
			f.phases[n] = p.Duration
		}
	}
	if len(f.phases) != len(benchPhases) {
		return f, fmt.Errorf("phases %+v: want %v", res.Phases, names)
	}
	for _, e := range res.Events {
		var id string
		var n int
		if e.Step == "etcd join" && e.Outcome == "ok" {
			if _, err := fmt.Sscanf(e.Detail, "voter %s after %d MemberPromote", &id, &n); err == nil {
				f.promoteRPCs += float64(n)
			}
		}
	}
	for _, h := range res.Hooks.Hooks {
		f.hookAttempts += float64(h.Attempts)
	}
	b.Logf("kubeboot (fault %q): %v, total %v", fault, res.Phases, f.total().Round(time.Millisecond))
	return f, nil
}

// anchorBootstrap brings up the same control plane as Run — node 1's etcd,
// nodes 2 and 3 joined as learners and promoted, every node's
// kube-apiserver and kubelet with its static pods and the controllers
// (startControlPlane), every apiserver's address published under the same
// prefix, the same bootstrap hooks — composed the way the anchors do it
// today:
//
//   - join (kubeadm): MemberAddAsLearner (retried every 500 ms while etcd
//     refuses it as an unhealthy cluster), start the member, then MemberPromote
//     every 500 ms until it succeeds or 2 minutes have passed; then kubeadm's
//     etcd health wait, every member's Status every 500 ms until all answer.
//     Under promote-reply-lost, node 2 promotes through the same
//     reply-dropping proxy as Run's (promoteReplyLoss).
//   - apiserver (kubeadm): the same startControlPlane as Run, then node 1's
//     /readyz every 500 ms until it answers ok.
//   - discovery (k3s): the same Publish of every apiserver as Run; the agent,
//     started when the first etcd member is up (t=0), reads the prefix with
//     a plain Get at t=0 and every 5 s after, until it holds every address.
//   - hooks (RKE2, kubeadm): one gate for all hooks — RKE2's static-pod
//     poll (node 1's etcd and kube-apiserver mirror pods present and Ready,
//     whatever their config hash), then /readyz every 2 s until ok — then
//     the example's own hook functions (rbac, crds, cluster-information,
//     then the CNI start) one after another, each retried every 500 ms on
//     failure (2 minutes at most). The static-pod poll starts at t=0 and
//     ticks every 20 s (before the control plane is started, a tick is false
//     without a request); under static-pod-upgrade, the same upgrade as
//     Run's is injected as the hooks are about to run and RKE2 polls its
//     static pods again, every 20 s from then. The hooks phase is measured
//     from the end of discovery, so it includes the rest of those polls.
//
// The apiserver requests (a counting RoundTripper on every anchor client)
// and the etcd RPCs (a gRPC interceptor on the anchor's client, plus the
// MemberPromote calls through the fault's proxy) are counted; the CNI
// start's single list as typha, on a client built inside startCNI, is not.
// Under promote-reply-lost, the promote that etcd applied loses its reply
// and every retry then fails with "can only promote a learner member", so
// the loop ends at its 2-minute limit: the anchor bootstrap is reported
// failed, with the time it took to fail as its join phase.
func anchorBootstrap(b *testing.B, fault string) (bootstrapFigures, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "kubeboot-anchor-")
	if err != nil {
		return bootstrapFigures{}, err
	}
	d := &demo{cfg: Config{Members: 3, Fault: fault, Out: io.Discard, Log: io.Discard}, tl: NewTimeline(io.Discard, false), dir: dir}
	defer d.teardown()
	if err := d.startEtcd(ctx); err != nil {
		return bootstrapFigures{}, err
	}
	var etcdRPCs, httpRequests atomic.Int64
	cli, err := d.etcd.NewClientConfig(clientv3.Config{DialOptions: []grpc.DialOption{grpc.WithUnaryInterceptor(
		func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			etcdRPCs.Add(1)
			return invoker(ctx, method, req, reply, cc, opts...)
		})}})
	if err != nil {
		return bootstrapFigures{}, err
	}
	f := bootstrapFigures{phases: map[string]time.Duration{}}

	// t=0: the first etcd member is up; the k3s agent and RKE2's static-pod
	// poll start now.
	b.StartTimer()
	t0 := time.Now()
	pollCtx, stopPolls := context.WithCancel(ctx)
	var polls sync.WaitGroup
	defer func() { stopPolls(); polls.Wait() }()
	addrsSeen := make(chan struct{})
	var wantAddrs atomic.Int64 // the number of apiservers, once known
	polls.Add(1)
	go func() { // k3s agent
		defer polls.Done()
		tick := time.NewTicker(k3sAddressPoll)
		defer tick.Stop()
		for {
			rctx, rcancel := context.WithTimeout(pollCtx, anchorRPCTimeout)
			resp, err := cli.Get(rctx, apiserverdisco.DefaultPrefix, clientv3.WithPrefix())
			rcancel()
			if want := wantAddrs.Load(); err == nil && want > 0 && int64(len(resp.Kvs)) >= want {
				close(addrsSeen)
				return
			}
			select {
			case <-pollCtx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	var kubeClient atomic.Pointer[kubernetes.Clientset] // set once the control plane is started
	staticPodsUp := make(chan struct{})
	polls.Add(1)
	go func() { // RKE2's static-pod poll
		defer polls.Done()
		rke2StaticPodPollUntil(pollCtx, &kubeClient)
		close(staticPodsUp)
	}()

	// join
	mark := t0
	endPhase := func(name string) {
		now := time.Now()
		f.phases[name] = now.Sub(mark)
		mark = now
	}
	for i := 2; i <= d.cfg.Members; i++ {
		ok, err := anchorJoin(ctx, d, cli, i, &f)
		if err != nil {
			return f, err
		}
		if !ok {
			endPhase(phaseJoin)
			b.StopTimer()
			f.failed = 1
			f.httpRequests, f.etcdRPCs = float64(httpRequests.Load()), float64(etcdRPCs.Load())
			b.Logf("anchor (fault %q): node%d's promote loop gave up after %s; bootstrap failed after %v", fault, i, kubeadmPromoteLimit, f.total().Round(time.Millisecond))
			return f, nil
		}
	}
	if err := pollUntil(ctx, kubeadmInterval, func() bool { return etcdHealthy(ctx, d, cli) }); err != nil {
		return f, fmt.Errorf("etcd health wait: %w", err)
	}
	endPhase(phaseJoin)

	// apiserver: the same control plane as Run (every node's apiserver and
	// kubelet with its static pods, the controllers)
	if err := d.startControlPlane(ctx); err != nil {
		return f, err
	}
	admin := d.api.Config()
	admin.Wrap(func(rt http.RoundTripper) http.RoundTripper { return countingTransport{rt, &httpRequests} })
	kube, err := kubernetes.NewForConfig(admin)
	if err != nil {
		return f, err
	}
	dyn, err := dynamic.NewForConfig(admin)
	if err != nil {
		return f, err
	}
	rc := kube.Discovery().RESTClient()
	kubeClient.Store(kube)
	if err := pollUntil(ctx, kubeadmInterval, func() bool { return readyzOK(ctx, rc) }); err != nil {
		return f, fmt.Errorf("kubeadm /readyz wait: %w", err)
	}
	endPhase(phaseAPIServer)

	// discovery: every node's address, as Run publishes them
	wantAddrs.Store(int64(len(d.nodes)))
	for _, n := range d.nodes {
		u, err := url.Parse(n.api.URL())
		if err != nil {
			return f, err
		}
		reg, err := apiserverdisco.Publish(ctx, d.client, n.name, u.Host, apiserverdisco.WithTTL(addressTTL))
		if err != nil {
			return f, err
		}
		defer reg.Close()
	}
	select {
	case <-addrsSeen:
	case <-ctx.Done():
		return f, fmt.Errorf("k3s address poll: %w", ctx.Err())
	}
	endPhase(phaseDiscovery)

	// hooks: one gate, then one after another
	select {
	case <-staticPodsUp:
	case <-ctx.Done():
		return f, fmt.Errorf("RKE2 static-pod poll: %w", ctx.Err())
	}
	if fault == FaultStaticPodUpgrade {
		// The same upgrade as Run's, as the hooks are about to run; RKE2
		// polls its static pods again (present and Ready, no hash), then
		// /readyz.
		u, err := d.beginStaticPodUpgrade(ctx, kube, nil)
		if err != nil {
			return f, err
		}
		defer u.wait()
		defer cancel() // before the wait: ends a restart still under way
		rke2StaticPodPollUntil(ctx, &kubeClient)
	}
	if err := pollUntil(ctx, rke2ReadyzPoll, func() bool { return readyzOK(ctx, rc) }); err != nil {
		return f, fmt.Errorf("RKE2 /readyz poll: %w", err)
	}
	gate := time.Since(mark)
	objs := calico.Objects{Kube: kube, Dynamic: dyn}
	hs := d.bootstrapHooks(objs, nil, &faultState{ctx: ctx})
	runs := make([]func(context.Context) error, 0, len(hs)+1)
	for _, h := range hs {
		runs = append(runs, h.Run)
	}
	runs = append(runs, func(ctx context.Context) error { return d.startCNI(ctx, kube) })
	for i, run := range runs {
		deadline := time.Now().Add(kubeadmPromoteLimit)
		var lastErr error
		if err := pollUntil(ctx, kubeadmInterval, func() bool {
			if time.Now().After(deadline) {
				return true
			}
			f.hookAttempts++
			hctx, hcancel := context.WithTimeout(ctx, 10*time.Second)
			defer hcancel()
			lastErr = run(hctx)
			return lastErr == nil
		}); err != nil {
			return f, err
		}
		if lastErr != nil {
			return f, fmt.Errorf("hook %d: %w", i, lastErr)
		}
	}
	endPhase(phaseHooks)
	b.StopTimer()
	f.httpRequests, f.etcdRPCs = float64(httpRequests.Load()), float64(etcdRPCs.Load())
	b.Logf("anchor (fault %q): %v (hooks gate %v), total %v", fault, f.phases, gate.Round(time.Millisecond), f.total().Round(time.Millisecond))
	return f, nil
}

// anchorJoin joins node i the kubeadm way. It reports false when the promote
// loop gave up.
func anchorJoin(ctx context.Context, d *demo, cli *clientv3.Client, i int, f *bootstrapFigures) (bool, error) {
	node := fmt.Sprintf("node%d", i)
	spec, err := d.etcd.NewMemberSpec(node)
	if err != nil {
		return false, err
	}
	promoteCli, fault, err := d.joinClient(i) // the reply-dropping proxy for node 2 under the fault
	if err != nil {
		return false, err
	}
	if fault != nil {
		defer fault.close()
	} else {
		promoteCli = cli
	}
	// kubeadm retries the add too: etcd refuses it ("unhealthy cluster")
	// until the member promoted just before has been connected long enough.
	var add *clientv3.MemberAddResponse
	var addErr error
	addDeadline := time.Now().Add(kubeadmPromoteLimit)
	if err := pollUntil(ctx, kubeadmInterval, func() bool {
		if time.Now().After(addDeadline) {
			return true
		}
		actx, acancel := context.WithTimeout(ctx, anchorRPCTimeout)
		defer acancel()
		add, addErr = cli.MemberAddAsLearner(actx, []string{spec.PeerURL})
		return addErr == nil
	}); err != nil {
		return false, fmt.Errorf("%s: MemberAddAsLearner: %w", node, err)
	}
	if addErr != nil {
		return false, fmt.Errorf("%s: MemberAddAsLearner: %w", node, addErr)
	}
	if _, err := d.etcd.StartMember(ctx, spec, testenv.InitialCluster(add, node)); err != nil {
		return false, fmt.Errorf("%s: start: %w", node, err)
	}
	deadline := time.Now().Add(kubeadmPromoteLimit)
	promoted := false
	err = pollUntil(ctx, kubeadmInterval, func() bool {
		if time.Now().After(deadline) {
			return true
		}
		f.promoteRPCs++
		pctx, pcancel := context.WithTimeout(ctx, anchorRPCTimeout)
		defer pcancel()
		_, err := promoteCli.MemberPromote(pctx, add.Member.ID)
		promoted = err == nil
		return promoted
	})
	return promoted, err
}

// pollUntil calls cond at once and then every interval until it returns
// true or ctx ends.
func pollUntil(ctx context.Context, interval time.Duration, cond func() bool) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// etcdHealthy is kubeadm's cluster check: every member answers Status.
func etcdHealthy(ctx context.Context, d *demo, cli *clientv3.Client) bool {
	for _, ep := range d.etcd.Endpoints() {
		sctx, cancel := context.WithTimeout(ctx, anchorRPCTimeout)
		_, err := cli.Status(sctx, ep)
		cancel()
		if err != nil {
			return false
		}
	}
	return true
}

func readyzOK(ctx context.Context, rc rest.Interface) bool {
	rctx, cancel := context.WithTimeout(ctx, anchorRPCTimeout)
	defer cancel()
	body, err := rc.Get().AbsPath("/readyz").DoRaw(rctx)
	return err == nil && string(body) == "ok"
}

// countingTransport counts the requests sent through it.
type countingTransport struct {
	rt http.RoundTripper
	n  *atomic.Int64
}

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.rt.RoundTrip(r)
}

// rke2StaticPodPollUntil is RKE2's static-pod check: every 20 s from now,
// until node 1's etcd and kube-apiserver mirror pods exist and are Ready
// (present and Ready, whatever their config hash). Before the control
// plane is started (kube not yet set), a tick is false without a request,
// as a kubelet finding no mirror pod.
func rke2StaticPodPollUntil(ctx context.Context, kube *atomic.Pointer[kubernetes.Clientset]) {
	_ = pollUntil(ctx, rke2StaticPodPoll, func() bool {
		cs := kube.Load()
		if cs == nil {
			return false
		}
		for _, name := range []string{etcdPodName, apiServerPodName} {
			pod, err := cs.CoreV1().Pods(staticPodNamespace).Get(ctx, mirrorPod(name, "node1"), metav1.GetOptions{})
			if err != nil || !podReady(pod) {
				return false
			}
		}
		return true
	})
}
