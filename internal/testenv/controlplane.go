package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ControlPlaneOption configures StartControlPlane and NewControlPlane.
type ControlPlaneOption func(*controlPlaneConfig)

type controlPlaneConfig struct {
	dir           string
	grace         time.Duration
	cmArgs        []string
	schedulerArgs []string
	logf          func(string, ...any)
}

// WithControlPlaneDir puts the control plane's kubeconfig, certificates and
// logs under dir (default: a new temporary directory that Close removes).
func WithControlPlaneDir(dir string) ControlPlaneOption {
	return func(o *controlPlaneConfig) { o.dir = dir }
}

// WithNodeMonitorGracePeriod sets kube-controller-manager's
// --node-monitor-grace-period (how long a node may go without renewing its
// lease before it is marked not ready; Kubernetes' default is 50 s) and a
// node monitor period of at most a second. Pair it with a node lease well
// under it (WithNodeLease): about half, or the node flaps to Unknown.
func WithNodeMonitorGracePeriod(d time.Duration) ControlPlaneOption {
	return func(o *controlPlaneConfig) { o.grace = d }
}

// WithControllerManagerArgs appends kube-controller-manager flags.
func WithControllerManagerArgs(args ...string) ControlPlaneOption {
	return func(o *controlPlaneConfig) { o.cmArgs = append(o.cmArgs, args...) }
}

// WithSchedulerArgs appends kube-scheduler flags.
func WithSchedulerArgs(args ...string) ControlPlaneOption {
	return func(o *controlPlaneConfig) { o.schedulerArgs = append(o.schedulerArgs, args...) }
}

// WithControlPlaneBuildLog receives progress messages about builds of the
// two binaries.
func WithControlPlaneBuildLog(logf func(string, ...any)) ControlPlaneOption {
	return func(o *controlPlaneConfig) { o.logf = logf }
}

// ControlPlane is a real kube-controller-manager (all controllers) and a
// real kube-scheduler, each a process against an APIServer with its admin
// credentials, serving nothing (--secure-port=0), without leader election.
// Its methods are safe for concurrent use.
type ControlPlane struct {
	api       *APIServer
	dir       string
	ownDir    bool
	cm        *process
	scheduler *process
	cmArgs    []string
	schedArgs []string
}

// StartControlPlane builds or finds the two binaries at a's Kubernetes
// version (see KubeControllerManagerBinary and APIServer.KubernetesVersion),
// starts them against a, and waits until the
// controller-manager's controllers run (it publishes kube-root-ca.crt into a
// new namespace). The scheduler serves nothing to wait on: it schedules
// pods once its informers have synced, well under a second after start.
// It blocks; cancelling ctx stops the wait and the processes and returns
// ctx's error. A nil a is an error.
func StartControlPlane(ctx context.Context, a *APIServer, opts ...ControlPlaneOption) (_ *ControlPlane, err error) {
	if a == nil {
		return nil, errors.New("testenv: StartControlPlane: nil *APIServer")
	}
	var cfg controlPlaneConfig
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	cmBin, err := kubeControllerManager.binaryVersion(ctx, a.KubernetesVersion(), cfg.logf)
	if err != nil {
		return nil, err
	}
	schedBin, err := kubeScheduler.binaryVersion(ctx, a.KubernetesVersion(), cfg.logf)
	if err != nil {
		return nil, err
	}
	c := &ControlPlane{api: a, dir: cfg.dir}
	if c.dir == "" {
		if c.dir, err = os.MkdirTemp("", "kubeboot-controlplane-"); err != nil {
			return nil, err
		}
		c.ownDir = true
	} else if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()
	kubeconfig := filepath.Join(c.dir, "admin.kubeconfig")
	if err := a.Kubeconfig(kubeconfig); err != nil {
		return nil, err
	}
	c.cm = &process{name: "kube-controller-manager", bin: cmBin, logFile: filepath.Join(c.dir, "kube-controller-manager.log")}
	c.scheduler = &process{name: "kube-scheduler", bin: schedBin, logFile: filepath.Join(c.dir, "kube-scheduler.log")}
	c.cmArgs = []string{
		"--kubeconfig=" + kubeconfig,
		"--controllers=*",
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=0",
		"--use-service-account-credentials=false",
		"--root-ca-file=" + a.CA().CertFile,
		"--cert-dir=" + filepath.Join(c.dir, "cm-certs"),
		// Without it the controller-manager creates a directory under /usr/libexec.
		"--flex-volume-plugin-dir=" + filepath.Join(c.dir, "flexvolume"),
		"--kube-api-qps=100",
		"--kube-api-burst=200",
		"--profiling=false",
	}
	if cfg.grace > 0 {
		period := min(time.Second, cfg.grace/4)
		c.cmArgs = append(c.cmArgs,
			"--node-monitor-grace-period="+cfg.grace.String(),
			"--node-monitor-period="+period.String())
	}
	c.cmArgs = append(c.cmArgs, cfg.cmArgs...)
	c.schedArgs = append([]string{
		"--kubeconfig=" + kubeconfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=0",
		"--kube-api-qps=100",
		"--kube-api-burst=200",
		"--profiling=false",
	}, cfg.schedulerArgs...)
	return c, c.Start(ctx)
}

// Start starts whichever of the two processes is not running (or has
// exited by itself) and waits as StartControlPlane does.
func (c *ControlPlane) Start(ctx context.Context) error {
	for _, p := range []*process{c.cm, c.scheduler} {
		if p.exitedEarly() {
			_ = p.stop(syscall.SIGKILL, time.Second) // reap it so it can start again
		}
	}
	cmExited := c.cmExitedChan()
	if !c.cm.running() {
		ch, err := c.cm.start(c.cmArgs)
		if err != nil {
			return err
		}
		cmExited = ch
	}
	if !c.scheduler.running() {
		if _, err := c.scheduler.start(c.schedArgs); err != nil {
			return err
		}
	}
	return c.waitControllers(ctx, cmExited)
}

func (c *ControlPlane) cmExitedChan() <-chan struct{} {
	c.cm.mu.Lock()
	defer c.cm.mu.Unlock()
	return c.cm.exited
}

// waitControllers creates a namespace and waits for the root CA publisher
// to put kube-root-ca.crt in it: proof that this controller-manager's
// controllers run, not a previous one's.
func (c *ControlPlane) waitControllers(ctx context.Context, exited <-chan struct{}) error {
	cs, err := c.api.Clientset()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	ns := "kubeboot-controlplane-probe-" + hex.EncodeToString(suffix)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("testenv: create namespace %s: %w", ns, err)
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer dcancel()
		_ = cs.CoreV1().Namespaces().Delete(dctx, ns, metav1.DeleteOptions{})
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		_, last := cs.CoreV1().ConfigMaps(ns).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		if last == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("testenv: kube-controller-manager exited before its controllers ran; log tail:\n%s", c.cm.logTail(30))
		case <-ctx.Done():
			return fmt.Errorf("testenv: waiting for kube-controller-manager to publish kube-root-ca.crt into %s: %w (last: %v); log tail:\n%s", ns, ctx.Err(), last, c.cm.logTail(30))
		case <-tick.C:
		}
	}
}

// Stop stops both processes (SIGTERM, SIGKILL after 3 s) and waits for
// them. Stopping a stopped control plane is a no-op.
func (c *ControlPlane) Stop() error {
	return errors.Join(c.scheduler.stop(syscall.SIGTERM, 3*time.Second), c.cm.stop(syscall.SIGTERM, 3*time.Second))
}

// StopScheduler stops only the scheduler (Start starts it again): new pods
// then stay Pending.
func (c *ControlPlane) StopScheduler() error { return c.scheduler.stop(syscall.SIGTERM, 3*time.Second) }

// StopControllerManager stops only the controller-manager (Start starts it
// again): Deployments, DaemonSets, Jobs and node health then stand still.
func (c *ControlPlane) StopControllerManager() error {
	return c.cm.stop(syscall.SIGTERM, 3*time.Second)
}

// Close stops both processes and removes the directory if StartControlPlane
// made it.
func (c *ControlPlane) Close() error {
	var err error
	if c.cm != nil {
		err = c.Stop()
	}
	if c.ownDir {
		_ = os.RemoveAll(c.dir)
	}
	return err
}

// LogTail returns the last n lines of each process's log, each under a
// header naming it.
func (c *ControlPlane) LogTail(n int) string {
	var b strings.Builder
	for _, p := range []*process{c.cm, c.scheduler} {
		b.WriteString("--- " + p.name + " (" + p.logFile + ", pid " + strconv.Itoa(p.pid()) + ")\n")
		b.WriteString(p.logTail(n))
	}
	return b.String()
}

// ControllerManagerLog returns the path of the controller-manager's log file.
func (c *ControlPlane) ControllerManagerLog() string { return c.cm.logFile }

// SchedulerLog returns the path of the scheduler's log file.
func (c *ControlPlane) SchedulerLog() string { return c.scheduler.logFile }
