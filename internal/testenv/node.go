package testenv

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// NodeOption configures StartNode, StartNodes, NewNode and NewNodes.
type NodeOption func(*nodeConfig)

type nodeConfig struct {
	dir    string
	lease  time.Duration
	labels map[string]string
	args   []string
	logf   func(string, ...any)
}

// WithNodeDir puts each node's files (certificates, kubeconfig, static pod
// manifests, kubelet state, log) under dir/<node name> (default: a new
// temporary directory per node that Close removes).
func WithNodeDir(dir string) NodeOption { return func(o *nodeConfig) { o.dir = dir } }

// WithNodeLease sets the kubelet's node lease duration (default 40 s,
// Kubernetes' default); the kubelet renews it every quarter of it. Rounded
// up to whole seconds. See WithNodeMonitorGracePeriod.
func WithNodeLease(d time.Duration) NodeOption { return func(o *nodeConfig) { o.lease = d } }

// WithNodeLabels registers the node with these labels.
func WithNodeLabels(labels map[string]string) NodeOption {
	return func(o *nodeConfig) {
		if o.labels == nil {
			o.labels = map[string]string{}
		}
		for k, v := range labels {
			o.labels[k] = v
		}
	}
}

// WithKubeletArgs appends hollow-kubelet flags (klog's -v=N, for example).
func WithKubeletArgs(args ...string) NodeOption {
	return func(o *nodeConfig) { o.args = append(o.args, args...) }
}

// WithNodeBuildLog receives progress messages about a hollow-kubelet build.
func WithNodeBuildLog(logf func(string, ...any)) NodeOption {
	return func(o *nodeConfig) { o.logf = logf }
}

// Node is one hollow kubelet: the real kubelet code (pod workers, status
// manager, probes, static pods and their mirror pods, node status and lease)
// over kubemark's fake CRI runtime, as a process registered against an
// APIServer as system:node:<name> (a client certificate from the
// apiserver's CA, so the Node authorizer applies). No container runs: a
// pod's sandbox gets a fake IP, exec probes always pass, httpGet probes
// really run (point them at 127.0.0.1), and a container runs until it is
// stopped unless its environment says otherwise (FakeExit).
//
// The kubelet's secure port serves TLS (certificate for 127.0.0.1 from the
// apiserver's CA) and authenticates and authorizes each request through the
// apiserver (client certificates from that CA, bearer tokens via
// TokenReview, SubjectAccessReview), as a kubelet in a cluster does; the
// read-only port answers plain HTTP without credentials. Both bind
// 127.0.0.1, on ports chosen at the first start and kept across restarts.
// Its methods are safe for concurrent use.
type Node struct {
	name         string
	api          *APIServer
	dir          string
	ownDir       bool
	socketDir    string // a short directory for the CRI socket when dir is too long for one
	staticPodDir string
	kubeconfig   string
	cert         CertPair
	args         []string
	proc         *process

	mu     sync.Mutex
	port   int
	roPort int
}

var nodeNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$`)

// StartNode builds or finds the hollow-kubelet binary at a's Kubernetes
// version (see HollowKubeletBinary and APIServer.KubernetesVersion; a
// kubelet is never newer than its apiserver), starts a node named name against a, and waits until
// its ports answer and its Node object is Ready. It blocks; cancelling ctx
// ends the wait, stops the node and returns ctx's error. A nil a, or a name
// that is not a valid node name, is an error.
func StartNode(ctx context.Context, a *APIServer, name string, opts ...NodeOption) (*Node, error) {
	nodes, err := StartNodes(ctx, a, []string{name}, opts...)
	if err != nil {
		return nil, err
	}
	return nodes[0], nil
}

// StartNodes starts one node per name, all at once, and waits until every
// one is Ready, as StartNode does. On error no node is left running.
func StartNodes(ctx context.Context, a *APIServer, names []string, opts ...NodeOption) ([]*Node, error) {
	if a == nil {
		return nil, errors.New("testenv: StartNodes: nil *APIServer")
	}
	if len(names) == 0 {
		return nil, errors.New("testenv: StartNodes: no node names")
	}
	seen := map[string]bool{}
	for _, n := range names {
		if !nodeNameRE.MatchString(n) {
			return nil, fmt.Errorf("testenv: StartNodes: invalid node name %q", n)
		}
		if seen[n] {
			return nil, fmt.Errorf("testenv: StartNodes: node name %q given twice", n)
		}
		seen[n] = true
	}
	var cfg nodeConfig
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	bin, err := hollowKubelet.binaryVersion(ctx, a.KubernetesVersion(), cfg.logf)
	if err != nil {
		return nil, err
	}
	nodes := make([]*Node, len(names))
	closeAll := func() {
		for _, n := range nodes {
			if n != nil {
				_ = n.Close()
			}
		}
	}
	for i, name := range names {
		n, err := newNode(a, bin, name, cfg)
		if err != nil {
			closeAll()
			return nil, err
		}
		nodes[i] = n
	}
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.Start(ctx)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		closeAll()
		return nil, err
	}
	return nodes, nil
}

func newNode(a *APIServer, bin, name string, cfg nodeConfig) (_ *Node, err error) {
	n := &Node{name: name, api: a}
	if cfg.dir == "" {
		if n.dir, err = os.MkdirTemp("", "kubeboot-node-"+name+"-"); err != nil {
			return nil, err
		}
		n.ownDir = true
	} else {
		n.dir = filepath.Join(cfg.dir, name)
		if err := os.MkdirAll(n.dir, 0o700); err != nil {
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			_ = n.Close()
		}
	}()
	n.staticPodDir = filepath.Join(n.dir, "manifests")
	if err := os.MkdirAll(n.staticPodDir, 0o755); err != nil {
		return nil, err
	}
	// A unix socket path must fit in 108 bytes.
	socket := filepath.Join(n.dir, "cri.sock")
	if len(socket) > 100 {
		if n.socketDir, err = os.MkdirTemp("", "kb-cri-"); err != nil {
			return nil, err
		}
		socket = filepath.Join(n.socketDir, "cri.sock")
	}
	pki := filepath.Join(n.dir, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return nil, err
	}
	// One certificate is both the kubelet's client identity (the Node
	// authorizer's system:node:<name> in system:nodes) and its serving
	// certificate for 127.0.0.1.
	if n.cert, err = a.CA().Issue(pki, "kubelet", "system:node:"+name, "system:nodes"); err != nil {
		return nil, err
	}
	n.kubeconfig = filepath.Join(n.dir, "kubelet.kubeconfig")
	if err := n.writeKubeconfig(); err != nil {
		return nil, err
	}
	lease := cfg.lease
	if lease <= 0 {
		lease = 40 * time.Second
	}
	var labels []string
	for k, v := range cfg.labels {
		labels = append(labels, k+"="+v)
	}
	n.args = append([]string{
		"--kubeconfig=" + n.kubeconfig,
		"--name=" + name,
		"--root-dir=" + filepath.Join(n.dir, "root"),
		"--static-pod-dir=" + n.staticPodDir,
		"--cri-socket=" + socket,
		"--tls-cert-file=" + n.cert.CertFile,
		"--tls-private-key-file=" + n.cert.KeyFile,
		"--client-ca-file=" + a.CA().CertFile,
		"--node-lease-duration=" + lease.String(),
		"--file-check-frequency=1s",
		"--node-labels=" + strings.Join(labels, ","),
	}, cfg.args...)
	n.proc = &process{name: "hollow-kubelet " + name, bin: bin, logFile: filepath.Join(n.dir, "kubelet.log")}
	return n, nil
}

func (n *Node) writeKubeconfig() error {
	doc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kubeboot
  cluster: {server: %q, certificate-authority: %q}
users:
- name: %q
  user: {client-certificate: %q, client-key: %q}
contexts:
- name: kubeboot
  context: {cluster: kubeboot, user: %q}
current-context: kubeboot
`, n.api.URL(), n.api.CA().CertFile, "system:node:"+n.name, n.cert.CertFile, n.cert.KeyFile, "system:node:"+n.name)
	return os.WriteFile(n.kubeconfig, []byte(doc), 0o600)
}

// Start starts the kubelet if it is not running (on new ports the first
// time, the same ones afterwards) and waits until both ports answer
// /healthz and the Node object is Ready. A first start that loses a port to
// another process is retried on new ports. It blocks; cancelling ctx ends
// the wait with ctx's error, and a kubelet this call launched is stopped
// again (one that was already running is left running).
func (n *Node) Start(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		n.mu.Lock()
		fresh := n.port == 0
		if fresh {
			p1, err := freePort()
			if err != nil {
				n.mu.Unlock()
				return err
			}
			p2, err := freePort()
			if err != nil {
				n.mu.Unlock()
				return err
			}
			n.port, n.roPort = p1, p2
		}
		args := append([]string{"--port=" + strconv.Itoa(n.port), "--read-only-port=" + strconv.Itoa(n.roPort)}, n.args...)
		n.mu.Unlock()
		if n.proc.running() && !n.proc.exitedEarly() {
			return n.waitReady(ctx, nil)
		}
		_ = n.proc.stop(syscall.SIGKILL, time.Second) // reap one that exited by itself
		exited, err := n.proc.start(args)
		if err != nil {
			return err
		}
		err = n.waitReady(ctx, exited)
		if err == nil {
			return nil
		}
		_ = n.proc.stop(syscall.SIGKILL, time.Second)
		if !fresh || attempt == 2 || !strings.Contains(n.proc.logTail(40), "address already in use") {
			return err
		}
		n.mu.Lock()
		n.port, n.roPort = 0, 0 // lost a port between choosing and binding it: choose again
		n.mu.Unlock()
	}
}

func (n *Node) waitReady(ctx context.Context, exited <-chan struct{}) error {
	cs, err := n.api.Clientset()
	if err != nil {
		return err
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		last := n.readyOnce(ctx, cs, hc)
		if last == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("testenv: node %s: kubelet exited before it was ready (last: %v); log tail:\n%s", n.name, last, n.LogTail(30))
		case <-ctx.Done():
			return fmt.Errorf("testenv: waiting for node %s: %w (last: %v); log tail:\n%s", n.name, ctx.Err(), last, n.LogTail(30))
		case <-tick.C:
		}
	}
}

func (n *Node) readyOnce(ctx context.Context, cs kubernetes.Interface, hc *http.Client) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.ReadOnlyURL()+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("read-only port: %w", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("read-only port /healthz: %s", resp.Status)
	}
	node, err := cs.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("node %s: %w", n.name, err)
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Status == corev1.ConditionTrue {
				return nil
			}
			return fmt.Errorf("node %s Ready=%s: %s", n.name, c.Status, c.Message)
		}
	}
	return fmt.Errorf("node %s has no Ready condition yet", n.name)
}

// Stop stops the kubelet gracefully (SIGTERM, SIGKILL after 3 s) and waits
// for it. Its pods are left as they are, as when a real kubelet stops: the
// Node goes NotReady once its lease expires. Stopping a stopped node is a
// no-op.
func (n *Node) Stop() error { return n.proc.stop(syscall.SIGTERM, 3*time.Second) }

// Kill kills the kubelet at once (SIGKILL to its process group), as a
// crash would, and waits for it to be gone.
func (n *Node) Kill() error { return n.proc.stop(syscall.SIGKILL, 3*time.Second) }

// Restart stops the kubelet gracefully and starts it again, on the same
// ports and state directory, as Start does.
func (n *Node) Restart(ctx context.Context) error {
	if err := n.Stop(); err != nil {
		return err
	}
	return n.Start(ctx)
}

// Close stops the kubelet and removes the directories the node made. The
// Node object stays in the apiserver.
func (n *Node) Close() error {
	var err error
	if n.proc != nil {
		err = n.Stop()
	}
	if n.socketDir != "" {
		_ = os.RemoveAll(n.socketDir)
	}
	if n.ownDir {
		_ = os.RemoveAll(n.dir)
	}
	return err
}

// Running reports whether the kubelet process is running.
func (n *Node) Running() bool { return n.proc.running() && !n.proc.exitedEarly() }

// Name returns the node's name.
func (n *Node) Name() string { return n.name }

// StaticPodDir returns the kubelet's static pod manifest directory (read
// every second). Write into it with WriteStaticPod: a file copied in place
// can be read half-written.
func (n *Node) StaticPodDir() string { return n.staticPodDir }

// Port returns the kubelet's secure port on 127.0.0.1 (0 before the first
// start).
func (n *Node) Port() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.port
}

// ReadOnlyPort returns the kubelet's read-only port on 127.0.0.1.
func (n *Node) ReadOnlyPort() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.roPort
}

// URL returns "https://127.0.0.1:<port>", the kubelet's secure server
// (/pods, /healthz, ...); its certificate is signed by the apiserver's CA.
func (n *Node) URL() string { return "https://127.0.0.1:" + strconv.Itoa(n.Port()) }

// ReadOnlyURL returns "http://127.0.0.1:<read-only port>".
func (n *Node) ReadOnlyURL() string { return "http://127.0.0.1:" + strconv.Itoa(n.ReadOnlyPort()) }

// Credentials returns the node's certificate and key: its client identity
// system:node:<name> (group system:nodes), also its serving certificate.
func (n *Node) Credentials() CertPair { return n.cert }

// LogFile returns the path of the kubelet's log.
func (n *Node) LogFile() string { return n.proc.logFile }

// LogTail returns the last n lines of the kubelet's log.
func (n *Node) LogTail(lines int) string { return n.proc.logTail(lines) }

// MirrorPodName returns the name of the mirror pod the kubelet creates for
// its static pod podName: "<podName>-<node name>".
func (n *Node) MirrorPodName(podName string) string { return podName + "-" + n.name }
