package readiness_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubeboot/kubeboot/readiness"
)

func ExampleWait() {
	// A listener that comes up on the third probe.
	probes := 0
	listener := readiness.Named("listener", readiness.CheckFunc(func(ctx context.Context) error {
		probes++
		if probes < 3 {
			return errors.New("port 6443 not bound yet")
		}
		return nil
	}))

	err := readiness.Wait(context.Background(), listener,
		readiness.WithBackoff(func() backoff.BackOff { return &backoff.ZeroBackOff{} }),
		readiness.WithObserver(func(a readiness.Attempt) {
			fmt.Printf("attempt %d: err=%v stable=%v\n", a.N, a.Err, a.Stable)
		}))
	fmt.Println("ready:", err == nil)
	// Output:
	// attempt 1: err=listener: port 6443 not bound yet stable=false
	// attempt 2: err=listener: port 6443 not bound yet stable=false
	// attempt 3: err=<nil> stable=true
	// ready: true
}

func ExampleWait_notReady() {
	never := readiness.Named("kube-scheduler", readiness.CheckFunc(func(ctx context.Context) error {
		return errors.New("dial tcp 127.0.0.1:10259: connection refused")
	}))
	// A policy that gives up after two retries; a context deadline ends
	// a Wait the same way, with Err being context.DeadlineExceeded.
	err := readiness.Wait(context.Background(), never,
		readiness.WithBackoff(func() backoff.BackOff { return backoff.WithMaxRetries(&backoff.ZeroBackOff{}, 2) }))

	var nr *readiness.NotReadyError
	if errors.As(err, &nr) {
		fmt.Println("gave up:", errors.Is(err, readiness.ErrGaveUp))
		fmt.Println("check:", nr.Check)
		fmt.Println("attempts:", nr.Attempts)
		fmt.Println("last reason:", nr.Last)
	}
	// Output:
	// gave up: true
	// check: kube-scheduler
	// attempts: 3
	// last reason: kube-scheduler: dial tcp 127.0.0.1:10259: connection refused
}

func ExampleAll() {
	ok := func(context.Context) error { return nil }
	etcd := readiness.Named("etcd", readiness.CheckFunc(ok))
	apiserver := readiness.Named("kube-apiserver", readiness.CheckFunc(func(context.Context) error {
		return errors.New("[-]etcd-readiness")
	}))
	scheduler := readiness.Named("kube-scheduler", readiness.CheckFunc(func(context.Context) error {
		return errors.New("connection refused")
	}))
	ctx := context.Background()

	fmt.Println(readiness.All(etcd, apiserver, scheduler).Check(ctx))
	fmt.Println(readiness.Any(etcd, apiserver, scheduler).Check(ctx))
	// Output:
	// 2 of 3 checks not ready: kube-apiserver: [-]etcd-readiness; kube-scheduler: connection refused
	// <nil>
}

// ExampleGate builds the gate a startup hook waits on during an upgrade:
// the new kube-apiserver static pod (not the one with the old manifest
// hash) is Ready, /readyz passes, and both have held for 3 checks over 2
// seconds. It is compiled but not run: it needs a cluster.
func ExampleGate() {
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: "https://127.0.0.1:6443"})
	if err != nil {
		return
	}
	oldHash := "5d1e5c6f0a7e0d1b2a1f9c3e4b5a6d7c" // read from the mirror pod before writing the new manifest
	apiserverUp := readiness.All(
		readiness.StaticPodReady(cs, "kube-system", "kube-apiserver-node1", readiness.WithHashChangedFrom(oldHash)),
		readiness.APIServerReady(cs.Discovery().RESTClient()),
	)
	// The shape package hooks takes for Hook.Gate.
	var gate func(ctx context.Context) error = readiness.Gate(apiserverUp, readiness.WithStability(3, 2*time.Second))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := gate(ctx); err != nil {
		fmt.Println(err) // names what is still failing, e.g. "[-]etcd"
	}
}

// ExampleEtcdHealthy waits for an etcd cluster to have a leader, answer a
// quorum read, have no alarms, and have a quorum of its voting members
// answer. It is compiled but not run: it needs a cluster.
func ExampleEtcdHealthy() {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"https://10.0.0.1:2379", "https://10.0.0.2:2379", "https://10.0.0.3:2379"}})
	if err != nil {
		return
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = readiness.Wait(ctx, readiness.EtcdHealthy(cli, readiness.WithMemberQuorum()), readiness.WithAttemptTimeout(3*time.Second))
	var ee *readiness.EtcdError
	if errors.As(err, &ee) {
		fmt.Println("unreachable:", ee.Unreachable, "alarms:", ee.Alarms)
	}
}

// ExampleKubeletStaticPodReady gates on a node's new kube-apiserver static
// pod while that apiserver is being replaced: the node's own kubelet is
// asked, with a client certificate it trusts (granted get on nodes/pods
// for this node), and APIServerReady then says the new apiserver serves.
// It is compiled but not run: it needs a node.
func ExampleKubeletStaticPodReady() {
	// Data rather than file names: for files, client-go keeps a goroutine
	// that reloads them.
	hc, err := rest.HTTPClientFor(&rest.Config{TLSClientConfig: rest.TLSClientConfig{
		CertData: []byte("-----BEGIN CERTIFICATE-----\n..."),
		KeyData:  []byte("-----BEGIN EC PRIVATE KEY-----\n..."),
		CAData:   []byte("-----BEGIN CERTIFICATE-----\n..."), // the kubelet's serving CA
	}})
	if err != nil {
		return
	}
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: "https://127.0.0.1:6443"})
	if err != nil {
		return
	}
	oldHash := "5d1e5c6f0a7e0d1b2a1f9c3e4b5a6d7c" // read before writing the new manifest
	kubelet := readiness.KubeletStaticPodReady(hc, "https://127.0.0.1:10250", "kube-system", "kube-apiserver-node1",
		readiness.WithHashChangedFrom(oldHash))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// One answer while the apiserver still serves puts the kubelet's
	// authorization of this caller in its cache (5 minutes by default).
	_ = kubelet.Check(ctx)

	// ... write the new kube-apiserver manifest ...

	err = readiness.Wait(ctx, readiness.All(kubelet, readiness.APIServerReady(cs.Discovery().RESTClient())),
		readiness.WithStability(3, 2*time.Second))
	if err != nil {
		fmt.Println(err) // names what is still failing: "static pod ... on the kubelet at ...: phase Pending; ..."
	}
}
