package testenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"
)

// KubernetesVersion is the version of every Kubernetes component tests run
// (kube-apiserver, kube-controller-manager, kube-scheduler and the hollow
// kubelet); it is pinned by the tools module in internal/testenv/apiserverbuild
// and stamped into each binary.
const KubernetesVersion = "v1.36.3"

// Environment variables that, when set, give the path of a prebuilt binary to
// use instead of building one.
const (
	EnvKubeAPIServer         = "KUBEBOOT_KUBE_APISERVER"
	EnvKubeControllerManager = "KUBEBOOT_KUBE_CONTROLLER_MANAGER"
	EnvKubeScheduler         = "KUBEBOOT_KUBE_SCHEDULER"
	EnvHollowKubelet         = "KUBEBOOT_HOLLOW_KUBELET"
)

// component is one binary the tests run, built from the tools module.
type component struct {
	name string // file name of the binary
	env  string // variable naming a prebuilt binary
	pkg  string // package to build, as seen from the tools module
	src  string // source directory inside the tools module, hashed into the cache key ("" for k8s.io/kubernetes packages)
	cold string // how long a cold build takes, for the log
}

var (
	kubeAPIServer = component{name: "kube-apiserver", env: EnvKubeAPIServer,
		pkg: "k8s.io/kubernetes/cmd/kube-apiserver", cold: "about 5 minutes"}
	kubeControllerManager = component{name: "kube-controller-manager", env: EnvKubeControllerManager,
		pkg: "k8s.io/kubernetes/cmd/kube-controller-manager", cold: "about a minute after kube-apiserver"}
	kubeScheduler = component{name: "kube-scheduler", env: EnvKubeScheduler,
		pkg: "k8s.io/kubernetes/cmd/kube-scheduler", cold: "under a minute after kube-apiserver"}
	hollowKubelet = component{name: "hollow-kubelet", env: EnvHollowKubelet,
		pkg: "./cmd/hollow-kubelet", src: "cmd/hollow-kubelet", cold: "about a minute after kube-apiserver"}
)

// Component names one binary the harness runs and the environment variable
// that can name a prebuilt one.
type Component struct {
	Name string // "kube-apiserver", "kube-controller-manager", "kube-scheduler" or "hollow-kubelet"
	Env  string // e.g. KUBEBOOT_KUBE_APISERVER
}

var components = []component{kubeAPIServer, kubeControllerManager, kubeScheduler, hollowKubelet}

// Components lists the binaries the harness runs, in the order `make test`
// builds them (kube-apiserver first: the others reuse most of its compiled
// packages).
func Components() []Component {
	out := make([]Component, 0, len(components))
	for _, c := range components {
		out = append(out, Component{Name: c.name, Env: c.env})
	}
	return out
}

// ComponentBinary returns the path of the named component's binary (a Name
// from Components), exactly as KubeAPIServerBinary and its siblings do; an
// unknown name is an error.
func ComponentBinary(ctx context.Context, name string, logf func(format string, args ...any)) (string, error) {
	for _, c := range components {
		if c.name == name {
			return c.binary(ctx, logf)
		}
	}
	return "", fmt.Errorf("testenv: unknown component %q", name)
}

// KubeAPIServerBinary returns the path of a kube-apiserver binary: the one
// named by KUBEBOOT_KUBE_APISERVER, or one built from the pinned
// k8s.io/kubernetes into the user cache directory (about five minutes cold
// on two cores, once; later calls find it at once). Concurrent callers in
// other processes wait on a file lock rather than building twice. logf, if
// not nil, is told when a build starts and ends. It blocks for the build;
// cancelling ctx ends a wait on the lock or the build with ctx's error.
func KubeAPIServerBinary(ctx context.Context, logf func(format string, args ...any)) (string, error) {
	return kubeAPIServer.binary(ctx, logf)
}

// KubeControllerManagerBinary is KubeAPIServerBinary for
// kube-controller-manager (KUBEBOOT_KUBE_CONTROLLER_MANAGER).
func KubeControllerManagerBinary(ctx context.Context, logf func(format string, args ...any)) (string, error) {
	return kubeControllerManager.binary(ctx, logf)
}

// KubeSchedulerBinary is KubeAPIServerBinary for kube-scheduler
// (KUBEBOOT_KUBE_SCHEDULER).
func KubeSchedulerBinary(ctx context.Context, logf func(format string, args ...any)) (string, error) {
	return kubeScheduler.binary(ctx, logf)
}

// HollowKubeletBinary is KubeAPIServerBinary for the hollow kubelet
// (KUBEBOOT_HOLLOW_KUBELET), built from internal/testenv/apiserverbuild/cmd/hollow-kubelet:
// the real kubelet (k8s.io/kubernetes/pkg/kubemark) over a fake CRI runtime.
func HollowKubeletBinary(ctx context.Context, logf func(format string, args ...any)) (string, error) {
	return hollowKubelet.binary(ctx, logf)
}

// ldflags stamps the version clients read from /version and nodes report;
// unstamped, a binary built from the module reports v0.0.0-master+$Format:%H$,
// which clients cannot parse. -s -w drops the symbol table and DWARF (about
// 30 % of the size).
func ldflags() string {
	major, minor := "", ""
	if parts := strings.SplitN(strings.TrimPrefix(KubernetesVersion, "v"), ".", 3); len(parts) >= 2 {
		major, minor = parts[0], parts[1]
	}
	flags := []string{"-s", "-w"}
	for _, pkg := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		flags = append(flags,
			"-X", pkg+".gitVersion="+KubernetesVersion,
			"-X", pkg+".gitMajor="+major,
			"-X", pkg+".gitMinor="+minor,
			"-X", pkg+".gitTreeState=clean")
	}
	return strings.Join(flags, " ")
}

// binary finds or builds c. The cache directory is keyed by the version, the
// platform (<cache>/kubeboot/<name>-<version>-<os>-<arch>/) and a hash of what determines the binary (the tools module's
// go.mod, the flags, and the sources of a command that lives in the tools
// module), so a change to any of them builds anew instead of reusing a stale
// binary.
func (c component) binary(ctx context.Context, logf func(format string, args ...any)) (string, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if p := os.Getenv(c.env); p != "" {
		if err := checkExecutable(p); err != nil {
			return "", fmt.Errorf("testenv: %s=%s: %w", c.env, p, err)
		}
		return p, nil
	}
	src, err := toolsModuleDir(c.env)
	if err != nil {
		return "", err
	}
	key, err := c.cacheKey(src)
	if err != nil {
		return "", err
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("testenv: no user cache dir for the %s build: %w", c.name, err)
	}
	// One lock per component and version, whatever the key: builds of one
	// component never run side by side, and a second one mostly relinks
	// what the first compiled.
	base := filepath.Join(cache, "kubeboot", c.name+"-"+KubernetesVersion+"-"+runtime.GOOS+"-"+runtime.GOARCH)
	dir := filepath.Join(base, key)
	bin := filepath.Join(dir, c.name)
	if checkExecutable(bin) == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	unlock, err := lockFile(ctx, filepath.Join(base, "build.lock"), c.name)
	if err != nil {
		return "", err
	}
	defer unlock()
	if checkExecutable(bin) == nil { // another process built it while we waited
		return bin, nil
	}
	logf("building %s %s into %s (%s the first time; cached afterwards)", c.name, KubernetesVersion, dir, c.cold)
	start := time.Now()
	tmp := bin + ".tmp"
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", ldflags(), "-o", tmp, c.pkg)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("testenv: building %s %s in %s: %w\n%s", c.name, KubernetesVersion, src, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	logf("built %s %s in %s", c.name, KubernetesVersion, time.Since(start).Round(time.Second))
	return bin, nil
}

// cacheKey hashes what the binary is built from besides the pinned version.
func (c component) cacheKey(src string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n", c.pkg, ldflags())
	files := []string{"go.mod"}
	if c.src != "" {
		names, err := filepath.Glob(filepath.Join(src, c.src, "*.go"))
		if err != nil {
			return "", err
		}
		sort.Strings(names)
		for _, n := range names {
			rel, _ := filepath.Rel(src, n)
			files = append(files, rel)
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			return "", fmt.Errorf("testenv: %s build: %w", c.name, err)
		}
		fmt.Fprintf(h, "%s %d\n", f, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

// toolsModuleDir finds internal/testenv/apiserverbuild: next to this source
// file (tests and `go run` keep source paths), or else above the working
// directory (a -trimpath build run inside the repository). env names the
// variable that would make the build unnecessary, for the error.
func toolsModuleDir(env string) (string, error) {
	var candidates []string
	if _, file, _, ok := runtime.Caller(0); ok {
		candidates = append(candidates, filepath.Join(filepath.Dir(file), "apiserverbuild"))
	}
	if wd, err := os.Getwd(); err == nil {
		for dir := wd; ; dir = filepath.Dir(dir) {
			candidates = append(candidates, filepath.Join(dir, "internal", "testenv", "apiserverbuild"))
			if filepath.Dir(dir) == dir {
				break
			}
		}
	}
	for _, dir := range candidates {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
	}
	return "", fmt.Errorf("testenv: the apiserverbuild module was not found (looked in %v); run inside the kubeboot repository or set %s", candidates[:min(2, len(candidates))], env)
}

func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	return nil
}

// lockFile takes an exclusive flock on path, polling so ctx can end the wait.
// what names the build, for the error.
func lockFile(ctx context.Context, path, what string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				_ = f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("testenv: lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("testenv: waiting for another process building %s (lock %s): %w", what, path, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}
