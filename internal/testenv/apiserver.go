package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// APIServerOption configures StartAPIServer and NewAPIServer.
type APIServerOption func(*apiServerConfig)

type apiServerConfig struct {
	etcd        *Cluster
	etcdServers []string
	extraArgs   []string
	dir         string
	logf        func(string, ...any)
	version     string
	peer        *APIServer
}

// WithEtcd runs the apiserver against an existing cluster instead of a
// private single-member one. The caller keeps ownership of the cluster.
func WithEtcd(c *Cluster) APIServerOption { return func(o *apiServerConfig) { o.etcd = c } }

// WithEtcdServers overrides the --etcd-servers URLs (for example to put a
// fault Proxy between the apiserver and etcd). TLS settings still come from
// the cluster.
func WithEtcdServers(urls ...string) APIServerOption {
	return func(o *apiServerConfig) { o.etcdServers = urls }
}

// WithExtraArgs appends kube-apiserver flags.
func WithExtraArgs(args ...string) APIServerOption {
	return func(o *apiServerConfig) { o.extraArgs = append(o.extraArgs, args...) }
}

// WithAPIServerDir puts certificates, keys and the log under dir (default: a
// new temporary directory that Close removes).
func WithAPIServerDir(dir string) APIServerOption { return func(o *apiServerConfig) { o.dir = dir } }

// WithKubernetesVersion runs kube-apiserver at version v (one of
// KubernetesVersions, or its minor) instead of the selected one
// (SelectedKubernetesVersion); StartAPIServer fails for an unsupported
// version. KUBEBOOT_KUBE_APISERVER is used only when v is the selected
// version; otherwise v's cached build is (built first if needed).
func WithKubernetesVersion(v string) APIServerOption {
	return func(o *apiServerConfig) { o.version = v }
}

// WithCredentialsOf makes the apiserver a peer of a in one cluster, the
// way the kube-apiservers of several control-plane nodes are: it uses a's
// CA and serving certificate, a's service-account signing key and a's
// admin token, so a client, a node certificate or a service-account token
// that works on one works on every peer. Run peers against the same etcd
// (WithEtcd) and at the same Kubernetes version.
func WithCredentialsOf(a *APIServer) APIServerOption {
	return func(o *apiServerConfig) { o.peer = a }
}

// WithBuildLog receives progress messages about a kube-apiserver build.
func WithBuildLog(logf func(string, ...any)) APIServerOption {
	return func(o *apiServerConfig) { o.logf = logf }
}

// APIServer is a real kube-apiserver process on 127.0.0.1 with RBAC
// authorization, a static admin token in system:masters and service-account
// token signing. Its methods are safe for concurrent use.
type APIServer struct {
	cfg     apiServerConfig
	bin     string
	dir     string
	ownDir  bool
	etcd    *Cluster
	ownEtcd bool
	args    []string
	host    string
	version string
	ca      *CA
	token   string
	creds   credentials
	// LogFile receives the process's stdout and stderr.
	LogFile string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartAPIServer builds or finds the kube-apiserver binary, starts it and
// waits until /readyz is 200 and the default namespace exists.
func StartAPIServer(ctx context.Context, opts ...APIServerOption) (_ *APIServer, err error) {
	var cfg apiServerConfig
	for _, o := range opts {
		o(&cfg)
	}
	version := cfg.version
	if version == "" {
		if version, err = SelectedKubernetesVersion(); err != nil {
			return nil, err
		}
	}
	bin, err := ComponentBinaryVersion(ctx, kubeAPIServer.name, version, cfg.logf)
	if err != nil {
		return nil, err
	}
	version, _ = resolveKubernetesVersion(version) // ComponentBinaryVersion accepted it
	a := &APIServer{cfg: cfg, bin: bin, dir: cfg.dir, etcd: cfg.etcd, version: version}
	if a.dir == "" {
		if a.dir, err = os.MkdirTemp("", "kubeboot-apiserver-"); err != nil {
			return nil, err
		}
		a.ownDir = true
	} else if err := os.MkdirAll(a.dir, 0o700); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = a.Close()
		}
	}()
	if a.etcd == nil {
		if a.etcd, err = StartCluster(ctx, WithDir(filepath.Join(a.dir, "etcd"))); err != nil {
			return nil, err
		}
		a.ownEtcd = true
	}
	if err := a.prepare(); err != nil {
		return nil, err
	}
	return a, a.Start(ctx)
}

// KubernetesVersion returns the Kubernetes version a runs (as in
// KubernetesVersions); StartControlPlane and StartNode run their
// components at the same version, so no kubelet is newer than its
// apiserver.
func (a *APIServer) KubernetesVersion() string { return a.version }

// credentials are what peers share (WithCredentialsOf).
type credentials struct {
	ca           *CA
	serving      CertPair
	saKey, saPub string
	token        string
	tokensFile   string
}

func (a *APIServer) prepare() error {
	if a.cfg.peer != nil {
		a.creds = a.cfg.peer.creds
	} else if err := a.newCredentials(); err != nil {
		return err
	}
	ca, serving, saKey, saPub, tokens := a.creds.ca, a.creds.serving, a.creds.saKey, a.creds.saPub, a.creds.tokensFile
	a.ca, a.token = ca, a.creds.token
	servers := a.cfg.etcdServers
	if len(servers) == 0 {
		servers = a.etcd.Endpoints()
	}
	a.LogFile = filepath.Join(a.dir, "kube-apiserver.log")
	a.args = []string{
		"--etcd-servers=" + strings.Join(servers, ","),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--cert-dir=" + filepath.Join(a.dir, "certs"),
		"--tls-cert-file=" + serving.CertFile,
		"--tls-private-key-file=" + serving.KeyFile,
		"--client-ca-file=" + ca.CertFile,
		"--token-auth-file=" + tokens,
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + saPub,
		"--service-account-signing-key-file=" + saKey,
		"--service-cluster-ip-range=10.96.0.0/16",
		"--disable-admission-plugins=ServiceAccount",
		"--endpoint-reconciler-type=none",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
	}
	if a.etcd.MutualTLS() {
		cc := a.etcd.ClientCert()
		a.args = append(a.args, "--etcd-cafile="+a.etcd.CA().CertFile, "--etcd-certfile="+cc.CertFile, "--etcd-keyfile="+cc.KeyFile)
	}
	a.args = append(a.args, a.cfg.extraArgs...)
	return nil
}

// newCredentials makes the apiserver's own CA, serving certificate,
// service-account key pair and admin token.
func (a *APIServer) newCredentials() error {
	ca, err := NewCA(a.dir)
	if err != nil {
		return err
	}
	serving, err := ca.Issue(a.dir, "apiserver", "kube-apiserver")
	if err != nil {
		return err
	}
	saKey, saPub := filepath.Join(a.dir, "sa.key"), filepath.Join(a.dir, "sa.pub")
	if err := writeRSAKeyPair(saKey, saPub); err != nil {
		return err
	}
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		return err
	}
	token := hex.EncodeToString(tok)
	tokens := filepath.Join(a.dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(token+`,kubeboot-admin,kubeboot-admin,"system:masters"`+"\n"), 0o600); err != nil {
		return err
	}
	a.creds = credentials{ca: ca, serving: serving, saKey: saKey, saPub: saPub, token: token, tokensFile: tokens}
	return nil
}

// Start starts the process if it is not running (a new loopback port on the
// first start, the same one on restarts) and waits until it is ready. A
// first start that loses its port to another process is retried on a new
// port.
func (a *APIServer) Start(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		fresh, err := a.launch()
		if err != nil {
			return err
		}
		err = a.waitReady(ctx, fresh)
		if err == nil {
			return nil
		}
		_ = a.Stop()
		if !fresh.newPort || attempt == 2 || !strings.Contains(a.LogTail(30), "address already in use") {
			return err
		}
		a.mu.Lock()
		a.host = "" // lost the port between choosing and binding it: choose again
		a.mu.Unlock()
	}
}

// launched is one started process.
type launched struct {
	exited  <-chan struct{}
	newPort bool
}

// launch starts the process. The process is started and waited for by one
// goroutine that keeps its OS thread locked for the process's whole life:
// the parent-death signal fires when the thread that started the child
// exits, not the process, and Go may retire an idle thread otherwise.
func (a *APIServer) launch() (launched, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd != nil {
		return launched{}, errors.New("testenv: kube-apiserver already running")
	}
	newPort := a.host == ""
	if newPort {
		port, err := freePort()
		if err != nil {
			return launched{}, err
		}
		a.host = "127.0.0.1:" + strconv.Itoa(port)
	}
	_, port, _ := strings.Cut(a.host, ":")
	log, err := os.OpenFile(a.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return launched{}, err
	}
	cmd := exec.Command(a.bin, append([]string{"--secure-port=" + port}, a.args...)...)
	if Verbose() {
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	} else {
		cmd.Stdout, cmd.Stderr = log, log
	}
	// Own process group, killed if the test binary dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	exited := make(chan struct{})
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer close(exited)
		defer log.Close()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
	}()
	if err := <-started; err != nil {
		return launched{}, fmt.Errorf("testenv: start kube-apiserver: %w", err)
	}
	a.cmd, a.exited = cmd, exited
	return launched{exited: exited, newPort: newPort}, nil
}

func (a *APIServer) waitReady(ctx context.Context, l launched) error {
	exited := l.exited
	cs, err := a.Clientset()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		last = a.readyOnce(ctx, cs)
		if last == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("testenv: kube-apiserver exited before it was ready (last: %v); log tail:\n%s", last, a.LogTail(30))
		case <-ctx.Done():
			return fmt.Errorf("testenv: waiting for kube-apiserver on %s: %w (last: %v); log tail:\n%s", a.host, ctx.Err(), last, a.LogTail(30))
		case <-tick.C:
		}
	}
}

func (a *APIServer) readyOnce(ctx context.Context, cs kubernetes.Interface) error {
	var code int
	res := cs.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).StatusCode(&code)
	if code != http.StatusOK {
		return fmt.Errorf("/readyz: %d %v", code, res.Error())
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		return fmt.Errorf("namespace default: %w", err)
	}
	return nil
}

// Stop sends SIGTERM to the process group, and SIGKILL after a short grace,
// then waits for it to exit. Stopping a stopped server is a no-op.
func (a *APIServer) Stop() error { return a.stop(syscall.SIGTERM) }

// Kill kills the process group at once (SIGKILL), as a node that loses
// power does, and waits for it to exit. Killing a stopped server is a no-op.
func (a *APIServer) Kill() error { return a.stop(syscall.SIGKILL) }

// PID returns the running process's ID, or 0 when it is not running: a new
// value after every Start, so callers can tell which process served them.
func (a *APIServer) PID() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return 0
	}
	return a.cmd.Process.Pid
}

// Port returns the secure port on 127.0.0.1 (0 before the first Start).
func (a *APIServer) Port() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, port, _ := strings.Cut(a.host, ":")
	n, _ := strconv.Atoi(port)
	return n
}

func (a *APIServer) stop(sig syscall.Signal) error {
	a.mu.Lock()
	cmd, exited := a.cmd, a.exited
	a.cmd, a.exited = nil, nil
	a.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = syscall.Kill(-cmd.Process.Pid, sig)
	select {
	case <-exited:
	case <-time.After(3 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	return nil
}

// Restart stops and starts the process on the same port.
func (a *APIServer) Restart(ctx context.Context) error {
	if err := a.Stop(); err != nil {
		return err
	}
	return a.Start(ctx)
}

// Close stops the process, then its private etcd, then removes its
// directory if it made it.
func (a *APIServer) Close() error {
	err := a.Stop()
	if a.ownEtcd && a.etcd != nil {
		_ = a.etcd.Close()
	}
	if a.ownDir {
		_ = os.RemoveAll(a.dir)
	}
	return err
}

// Running reports whether the process is running.
func (a *APIServer) Running() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cmd != nil
}

// URL returns "https://127.0.0.1:<port>".
func (a *APIServer) URL() string { return "https://" + a.host }

// Etcd returns the cluster the apiserver stores its data in.
func (a *APIServer) Etcd() *Cluster { return a.etcd }

// CA returns the CA that signed the serving certificate.
func (a *APIServer) CA() *CA { return a.ca }

// Config returns a fresh admin *rest.Config (user kubeboot-admin in
// system:masters).
func (a *APIServer) Config() *rest.Config {
	return a.configWithToken(a.token)
}

// ConfigWithToken returns a config that presents an arbitrary bearer token
// (for testing bad credentials).
func (a *APIServer) ConfigWithToken(token string) *rest.Config { return a.configWithToken(token) }

func (a *APIServer) configWithToken(token string) *rest.Config {
	return &rest.Config{
		Host:            a.URL(),
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: a.ca.PEM()},
		QPS:             200,
		Burst:           400,
	}
}

// Clientset returns an admin clientset.
func (a *APIServer) Clientset() (*kubernetes.Clientset, error) {
	return kubernetes.NewForConfig(a.Config())
}

// Kubeconfig writes an admin kubeconfig to path.
func (a *APIServer) Kubeconfig(path string) error {
	caFile := a.ca.CertFile
	doc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kubeboot
  cluster: {server: %q, certificate-authority: %q}
users:
- name: kubeboot-admin
  user: {token: %q}
contexts:
- name: kubeboot
  context: {cluster: kubeboot, user: kubeboot-admin}
current-context: kubeboot
`, a.URL(), caFile, a.token)
	return os.WriteFile(path, []byte(doc), 0o600)
}

// LogTail returns the last n lines of the process's output.
func (a *APIServer) LogTail(n int) string { return tailFile(a.LogFile, n) }

// ServiceAccountConfig creates (if needed) the namespace and ServiceAccount
// and returns a config authenticated as it through a TokenRequest. The
// ServiceAccount has no rights until the caller binds some.
func (a *APIServer) ServiceAccountConfig(ctx context.Context, namespace, name string) (*rest.Config, error) {
	cs, err := a.Clientset()
	if err != nil {
		return nil, err
	}
	if err := ensureNamespace(ctx, cs, namespace); err != nil {
		return nil, err
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	if _, err := cs.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("testenv: create ServiceAccount %s/%s: %w", namespace, name, err)
	}
	exp := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("testenv: token for ServiceAccount %s/%s: %w", namespace, name, err)
	}
	return a.configWithToken(tr.Status.Token), nil
}

// BindClusterRules creates a ClusterRole named roleName with rules and binds
// it to the ServiceAccount namespace/name with a ClusterRoleBinding of the
// same name.
func (a *APIServer) BindClusterRules(ctx context.Context, namespace, name, roleName string, rules []rbacv1.PolicyRule) error {
	cs, err := a.Clientset()
	if err != nil {
		return err
	}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: roleName}, Rules: rules}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("testenv: create ClusterRole %s: %w", roleName, err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: roleName},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: roleName},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: namespace, Name: name}},
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("testenv: create ClusterRoleBinding %s: %w", roleName, err)
	}
	return nil
}

// BindNamespaceRules creates a Role named roleName in roleNamespace with
// rules and binds it to the ServiceAccount saNamespace/name.
func (a *APIServer) BindNamespaceRules(ctx context.Context, roleNamespace, saNamespace, name, roleName string, rules []rbacv1.PolicyRule) error {
	cs, err := a.Clientset()
	if err != nil {
		return err
	}
	if err := ensureNamespace(ctx, cs, roleNamespace); err != nil {
		return err
	}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: roleName, Namespace: roleNamespace}, Rules: rules}
	if _, err := cs.RbacV1().Roles(roleNamespace).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("testenv: create Role %s/%s: %w", roleNamespace, roleName, err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: roleName, Namespace: roleNamespace},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: roleName},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: saNamespace, Name: name}},
	}
	if _, err := cs.RbacV1().RoleBindings(roleNamespace).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("testenv: create RoleBinding %s/%s: %w", roleNamespace, roleName, err)
	}
	return nil
}

func ensureNamespace(ctx context.Context, cs kubernetes.Interface, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("testenv: create namespace %s: %w", name, err)
	}
	return nil
}
