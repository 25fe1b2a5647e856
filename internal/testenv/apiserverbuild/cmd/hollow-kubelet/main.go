// Command hollow-kubelet is the real kubelet over a fake CRI runtime, built
// from k8s.io/kubernetes/pkg/kubemark the way Kubernetes' scale tests run
// nodes, with the changes kubeboot's tests need: images report a size, the
// kubelet's real prober runs (httpGet probes reach servers on 127.0.0.1;
// exec probes always pass), every server binds 127.0.0.1, the secure port
// serves TLS with webhook authentication and authorization, and a container
// can exit with a chosen code after a chosen time (see runtime.go).
//
// internal/testenv builds it into the user cache directory and runs one
// process per node.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/types"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	kubeletapp "k8s.io/kubernetes/cmd/kubelet/app"
	"k8s.io/kubernetes/cmd/kubelet/app/options"
	kubeletconfig "k8s.io/kubernetes/pkg/kubelet/apis/config"
	cadvisortest "k8s.io/kubernetes/pkg/kubelet/cadvisor/testing"
	"k8s.io/kubernetes/pkg/kubelet/cm"
	"k8s.io/kubernetes/pkg/kubemark"
)

type config struct {
	kubeconfig   string
	name         string
	rootDir      string
	staticPodDir string
	criSocket    string
	port         int
	readOnlyPort int
	tlsCert      string
	tlsKey       string
	clientCA     string
	lease        time.Duration
	fileCheck    time.Duration
	labels       string
}

func main() {
	var c config
	fs := flag.NewFlagSet("hollow-kubelet", flag.ExitOnError)
	klog.InitFlags(fs)
	fs.StringVar(&c.kubeconfig, "kubeconfig", "", "kubeconfig with the node's credentials")
	fs.StringVar(&c.name, "name", "", "node name")
	fs.StringVar(&c.rootDir, "root-dir", "", "directory for all of the kubelet's state")
	fs.StringVar(&c.staticPodDir, "static-pod-dir", "", "static pod manifest directory")
	fs.StringVar(&c.criSocket, "cri-socket", "", "unix socket path of the fake CRI runtime")
	fs.IntVar(&c.port, "port", 0, "secure (TLS) port on 127.0.0.1")
	fs.IntVar(&c.readOnlyPort, "read-only-port", 0, "read-only (plain HTTP) port on 127.0.0.1; 0 disables it")
	fs.StringVar(&c.tlsCert, "tls-cert-file", "", "serving certificate")
	fs.StringVar(&c.tlsKey, "tls-private-key-file", "", "serving key")
	fs.StringVar(&c.clientCA, "client-ca-file", "", "CA for client certificates on the secure port")
	fs.DurationVar(&c.lease, "node-lease-duration", 40*time.Second, "node lease duration (renewed every quarter of it)")
	fs.DurationVar(&c.fileCheck, "file-check-frequency", time.Second, "how often the static pod directory is read")
	fs.StringVar(&c.labels, "node-labels", "", "k=v,k2=v2 labels to register the node with")
	_ = fs.Parse(os.Args[1:])

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, "hollow-kubelet:", err)
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

func run(ctx context.Context, c config) error {
	for flagName, v := range map[string]string{"kubeconfig": c.kubeconfig, "name": c.name, "root-dir": c.rootDir,
		"static-pod-dir": c.staticPodDir, "cri-socket": c.criSocket, "tls-cert-file": c.tlsCert,
		"tls-private-key-file": c.tlsKey, "client-ca-file": c.clientCA} {
		if v == "" {
			return fmt.Errorf("--%s is required", flagName)
		}
	}
	if c.port <= 0 {
		return errors.New("--port is required")
	}
	labels := map[string]string{}
	if c.labels != "" {
		for _, kv := range strings.Split(c.labels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			labels[k] = v
		}
	}

	restCfg, err := clientcmd.BuildConfigFromFlags("", c.kubeconfig)
	if err != nil {
		return err
	}
	restCfg.UserAgent = "hollow-kubelet"
	restCfg.ContentType = "application/vnd.kubernetes.protobuf"
	restCfg.QPS, restCfg.Burst = 50, 100
	client, err := clientset.NewForConfig(restCfg)
	if err != nil {
		return err
	}

	f, kc := kubemark.GetHollowKubeletConfig(&kubemark.HollowKubeletOptions{
		NodeName:            c.name,
		KubeletPort:         c.port,
		KubeletReadOnlyPort: c.readOnlyPort,
		MaxPods:             110,
		NodeLabels:          labels,
	})
	// GetHollowKubeletConfig makes a fresh root directory (with static-pods
	// and pod-logs in it) under /tmp on every call; the node's state lives
	// under --root-dir instead, the same one across restarts.
	if err := os.RemoveAll(f.RootDirectory); err != nil {
		return err
	}
	f.RootDirectory = filepath.Join(c.rootDir, "kubelet")
	f.CertDirectory = filepath.Join(c.rootDir, "pki")
	kc.PodLogsDir = filepath.Join(c.rootDir, "pod-logs")
	for _, d := range []string{f.RootDirectory, f.CertDirectory, kc.PodLogsDir, c.staticPodDir} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return err
		}
	}
	kc.Address = "127.0.0.1"
	kc.HealthzPort = 0 // one fixed port (10248) per host would collide between nodes
	kc.StaticPodPath = c.staticPodDir
	kc.FileCheckFrequency.Duration = c.fileCheck
	kc.NodeLeaseDurationSeconds = int32((c.lease + time.Second - 1) / time.Second)
	endpoint := "unix://" + c.criSocket
	kc.ContainerRuntimeEndpoint = endpoint
	kc.ImageServiceEndpoint = endpoint
	kc.TLSCertFile, kc.TLSPrivateKeyFile = c.tlsCert, c.tlsKey
	// The kubelet's command-line defaults (options.NewKubeletConfiguration's
	// legacy ones) are anonymous access and AlwaysAllow; a kubelet in a
	// cluster authenticates and authorizes through the apiserver.
	kc.Authentication.X509.ClientCAFile = c.clientCA
	kc.Authentication.Anonymous.Enabled = false
	kc.Authentication.Webhook.Enabled = true
	kc.Authorization.Mode = kubeletconfig.KubeletAuthorizationModeWebhook

	heartbeatCfg := *restCfg
	heartbeatCfg.Timeout = min(kc.NodeStatusUpdateFrequency.Duration, time.Duration(kc.NodeLeaseDurationSeconds)*time.Second)
	heartbeatCfg.QPS = -1
	heartbeatClient, err := clientset.NewForConfig(&heartbeatCfg)
	if err != nil {
		return err
	}

	rt := newRuntime()
	if err := rt.serve(c.criSocket); err != nil {
		return err
	}
	defer rt.stop()
	runtimeService, imageService, err := criClients(ctx, endpoint)
	if err != nil {
		return err
	}

	hk := kubemark.NewHollowKubelet(f, kc, client, heartbeatClient,
		&cadvisortest.Fake{NodeName: c.name}, imageService, runtimeService, cm.NewStubContainerManager())
	// kubemark's fake prober reports every container Ready at once; nil
	// makes the kubelet build its real one.
	hk.KubeletDeps.ProbeManager = nil
	tlsOptions, err := kubeletapp.InitializeTLS(ctx, f, kc)
	if err != nil {
		return fmt.Errorf("kubelet TLS: %w", err)
	}
	hk.KubeletDeps.TLSOptions = tlsOptions
	auth, runCAReload, err := kubeletapp.BuildAuth(types.NodeName(c.name), client, *kc)
	if err != nil {
		return fmt.Errorf("kubelet auth: %w", err)
	}
	hk.KubeletDeps.Auth = auth
	go runCAReload(ctx.Done())

	if err := kubeletapp.RunKubelet(ctx, &options.KubeletServer{KubeletFlags: *f, KubeletConfiguration: *kc}, hk.KubeletDeps); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}
