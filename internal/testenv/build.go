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

// KubernetesVersion is the default version of every Kubernetes component
// tests run (kube-apiserver, kube-controller-manager, kube-scheduler and the
// hollow kubelet): the one used unless KUBEBOOT_KUBERNETES_VERSION selects
// another of KubernetesVersions. It is stamped into each binary.
const KubernetesVersion = "v1.37.2"

// EnvKubernetesVersion selects the Kubernetes version the harness runs, one
// of KubernetesVersions ("v1.35.4", or just its minor, "1.35"); unset means
// KubernetesVersion. See SelectedKubernetesVersion.
const EnvKubernetesVersion = "KUBEBOOT_KUBERNETES_VERSION"

// kubernetesVersions are the supported versions, newest first; each has a
// tools module internal/testenv/apiserverbuild/v1.<minor>/go.mod.
var kubernetesVersions = []string{"v1.37.2", "v1.36.3", "v1.35.4"}

// KubernetesVersions returns the Kubernetes versions the harness can run,
// newest first (one per supported minor).
func KubernetesVersions() []string { return append([]string(nil), kubernetesVersions...) }

// SelectedKubernetesVersion returns the version KUBEBOOT_KUBERNETES_VERSION
// selects ("v1.35.4", "1.35.4", "v1.35" and "1.35" all select v1.35.4), or
// KubernetesVersion when it is unset. A value that names no supported
// version is an error naming the supported ones; every binary lookup
// returns that error too, rather than running a version nobody asked for.
func SelectedKubernetesVersion() (string, error) {
	v := os.Getenv(EnvKubernetesVersion)
	if v == "" {
		return KubernetesVersion, nil
	}
	got, err := resolveKubernetesVersion(v)
	if err != nil {
		return "", fmt.Errorf("testenv: %s=%s: %w", EnvKubernetesVersion, v, err)
	}
	return got, nil
}

// resolveKubernetesVersion maps a full version or a minor to a supported
// version.
func resolveKubernetesVersion(v string) (string, error) {
	want := "v" + strings.TrimPrefix(strings.TrimSpace(v), "v")
	for _, s := range kubernetesVersions {
		if want == s || want == minorOf(s) {
			return s, nil
		}
	}
	return "", fmt.Errorf("unsupported Kubernetes version %q (supported: %s)", v, strings.Join(kubernetesVersions, ", "))
}

// minorOf returns "v1.35" for "v1.35.4".
func minorOf(v string) string {
	if i := strings.LastIndex(v, "."); strings.Count(v, ".") == 2 {
		return v[:i]
	}
	return v
}

// Environment variables that, when set, give the path of a prebuilt binary to
// use instead of building one. Each names the binary of the selected
// Kubernetes version (SelectedKubernetesVersion); a caller asking for
// another version explicitly gets that version's cached build instead.
const (
	EnvKubeAPIServer         = "KUBEBOOT_KUBE_APISERVER"
	EnvKubeControllerManager = "KUBEBOOT_KUBE_CONTROLLER_MANAGER"
	EnvKubeScheduler         = "KUBEBOOT_KUBE_SCHEDULER"
	EnvHollowKubelet         = "KUBEBOOT_HOLLOW_KUBELET"
)

// component is one binary the tests run, built from a tools module.
type component struct {
	name string // file name of the binary
	env  string // variable naming a prebuilt binary
	pkg  string // package to build, as seen from the tools module
	src  string // source directory inside the tools module, hashed into the cache key ("" for packages of a dependency)
	cold string // how long a cold build takes, for the log
	etcd bool   // built by the etcd tools module (etcdbuild) rather than apiserverbuild
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
	etcdServer = component{name: "etcd", env: EnvEtcd,
		pkg: "go.etcd.io/etcd/server/v3", cold: "about a minute", etcd: true}
)

// Component names one binary the harness runs and the environment variable
// that can name a prebuilt one.
type Component struct {
	Name string // "kube-apiserver", "kube-controller-manager", "kube-scheduler" or "hollow-kubelet"
	Env  string // e.g. KUBEBOOT_KUBE_APISERVER
}

var components = []component{kubeAPIServer, kubeControllerManager, kubeScheduler, hollowKubelet}

// Components lists the Kubernetes binaries the harness runs, in the order
// `make test` builds them (kube-apiserver first: the others reuse most of
// its compiled packages). The etcd server (EtcdBinary) is not among them:
// only KUBEBOOT_ETCD_VERSION asks for it.
func Components() []Component {
	out := make([]Component, 0, len(components))
	for _, c := range components {
		out = append(out, Component{Name: c.name, Env: c.env})
	}
	return out
}

// ComponentBinary returns the path of the named component's binary (a Name
// from Components) for the selected Kubernetes version, exactly as
// KubeAPIServerBinary and its siblings do; an unknown name is an error.
func ComponentBinary(ctx context.Context, name string, logf func(format string, args ...any)) (string, error) {
	v, err := SelectedKubernetesVersion()
	if err != nil {
		return "", err
	}
	return ComponentBinaryVersion(ctx, name, v, logf)
}

// ComponentBinaryVersion is ComponentBinary for a given Kubernetes version
// (one of KubernetesVersions, or its minor). The component's environment
// variable is honoured only when version is the selected one. An unknown
// name or an unsupported version is an error.
func ComponentBinaryVersion(ctx context.Context, name, version string, logf func(format string, args ...any)) (string, error) {
	v, err := resolveKubernetesVersion(version)
	if err != nil {
		return "", fmt.Errorf("testenv: %s: %w", name, err)
	}
	for _, c := range components {
		if c.name == name {
			return c.binaryVersion(ctx, v, logf)
		}
	}
	return "", fmt.Errorf("testenv: unknown component %q", name)
}

// KubeAPIServerBinary returns the path of a kube-apiserver binary of the
// selected Kubernetes version (SelectedKubernetesVersion): the one named by
// KUBEBOOT_KUBE_APISERVER, or one built from the pinned k8s.io/kubernetes
// into the user cache directory (about five minutes cold on two cores, once
// per version; later calls find it at once). Concurrent callers in other
// processes wait on a file lock rather than building twice. logf, if not
// nil, is told when a build starts and ends. It blocks for the build;
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
// 30 % of the size). The etcd server reports its version from a constant and
// gets only -s -w.
func (c component) ldflags(version string) string {
	flags := []string{"-s", "-w"}
	if c.etcd {
		return strings.Join(flags, " ")
	}
	major, minor := "", ""
	if parts := strings.SplitN(strings.TrimPrefix(version, "v"), ".", 3); len(parts) >= 2 {
		major, minor = parts[0], parts[1]
	}
	for _, pkg := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		flags = append(flags,
			"-X", pkg+".gitVersion="+version,
			"-X", pkg+".gitMajor="+major,
			"-X", pkg+".gitMinor="+minor,
			"-X", pkg+".gitTreeState=clean")
	}
	return strings.Join(flags, " ")
}

// binary finds or builds c at the selected version (EtcdVersion for etcd).
func (c component) binary(ctx context.Context, logf func(format string, args ...any)) (string, error) {
	if c.etcd {
		return c.binaryVersion(ctx, EtcdVersion, logf)
	}
	v, err := SelectedKubernetesVersion()
	if err != nil {
		return "", err
	}
	return c.binaryVersion(ctx, v, logf)
}

// modFile returns the go.mod, relative to the tools module directory, that
// pins version: apiserverbuild builds every Kubernetes version from one
// source tree with `-modfile=v1.<minor>/go.mod`; etcdbuild has one version.
func (c component) modFile(version string) string {
	if c.etcd {
		return "go.mod"
	}
	return filepath.Join(minorOf(version), "go.mod")
}

// binaryVersion finds or builds c at version. The environment variable
// wins when version is the selected one. The cache directory is keyed by
// the version, the platform (<cache>/kubeboot/<name>-<version>-<os>-<arch>/)
// and a hash of what determines the binary (the version's go.mod, the flags,
// and the sources of a command that lives in the tools module), so a change
// to any of them builds anew instead of reusing a stale binary.
func (c component) binaryVersion(ctx context.Context, version string, logf func(format string, args ...any)) (string, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	selected := EtcdVersion
	if !c.etcd {
		var err error
		if selected, err = SelectedKubernetesVersion(); err != nil {
			return "", err
		}
	}
	if p := os.Getenv(c.env); p != "" && version == selected {
		if err := checkExecutable(p); err != nil {
			return "", fmt.Errorf("testenv: %s=%s: %w", c.env, p, err)
		}
		return p, nil
	}
	src, err := c.toolsDir()
	if err != nil {
		return "", err
	}
	key, err := c.cacheKey(src, version)
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
	base := filepath.Join(cache, "kubeboot", c.name+"-"+version+"-"+runtime.GOOS+"-"+runtime.GOARCH)
	dir := filepath.Join(base, key)
	bin := filepath.Join(dir, c.name)
	if checkExecutable(bin) == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	unlock, err := lockFile(ctx, filepath.Join(base, "build.lock"), c.name+" "+version)
	if err != nil {
		return "", err
	}
	defer unlock()
	if checkExecutable(bin) == nil { // another process built it while we waited
		return bin, nil
	}
	logf("building %s %s into %s (%s the first time; cached afterwards)", c.name, version, dir, c.cold)
	start := time.Now()
	tmp := bin + ".tmp"
	args := []string{"build", "-trimpath", "-ldflags", c.ldflags(version), "-o", tmp}
	if !c.etcd {
		args = append(args, "-modfile="+c.modFile(version))
	}
	if c.src != "" {
		args = append(args, "-tags="+versionTag(version))
	}
	cmd := exec.CommandContext(ctx, "go", append(args, c.pkg)...)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("testenv: building %s %s in %s: %w\n%s", c.name, version, src, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	logf("built %s %s in %s", c.name, version, time.Since(start).Round(time.Second))
	return bin, nil
}

// cacheKey hashes what the binary is built from besides the version: the
// package, the flags, the version's go.mod without its comment lines (they
// say how it was made, not what it builds), and the sources of a command
// that lives in the tools module.
func (c component) cacheKey(src, version string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n", c.pkg, c.ldflags(version))
	files := []string{c.modFile(version)}
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
	for i, f := range files {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			return "", fmt.Errorf("testenv: %s %s build: %w", c.name, version, err)
		}
		name := f
		if i == 0 {
			name, b = "go.mod", stripCommentLines(b)
		}
		fmt.Fprintf(h, "%s %d\n", name, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

// stripCommentLines drops the lines of a go.mod that are only a comment.
func stripCommentLines(b []byte) []byte {
	var out []byte
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "//") {
			out = append(out, line...)
		}
	}
	return out
}

// versionTag is the build tag a command in the tools module is built with
// at version, kubeboot_k8s_1_<minor>, so a file can adapt to an API that
// changed between minors (see cmd/hollow-kubelet/cri_1_35.go). The version
// is in the cache directory's name, so the tag needs no place in the key.
func versionTag(version string) string {
	return "kubeboot_k8s_" + strings.ReplaceAll(strings.TrimPrefix(minorOf(version), "v"), ".", "_")
}

// toolsDir is the tools module c is built in.
func (c component) toolsDir() (string, error) {
	if c.etcd {
		return moduleDir("etcdbuild", c.env)
	}
	return toolsModuleDir(c.env)
}

// toolsModuleDir finds internal/testenv/apiserverbuild (see moduleDir).
func toolsModuleDir(env string) (string, error) { return moduleDir("apiserverbuild", env) }

// moduleDir finds the tools module internal/testenv/<name>: next to this
// source file (tests and `go run` keep source paths), or else above the
// working directory (a -trimpath build run inside the repository). env
// names the variable that would make the build unnecessary, for the error.
func moduleDir(name, env string) (string, error) {
	var candidates []string
	if _, file, _, ok := runtime.Caller(0); ok {
		candidates = append(candidates, filepath.Join(filepath.Dir(file), name))
	}
	if wd, err := os.Getwd(); err == nil {
		for dir := wd; ; dir = filepath.Dir(dir) {
			candidates = append(candidates, filepath.Join(dir, "internal", "testenv", name))
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
	return "", fmt.Errorf("testenv: the %s module was not found (looked in %v); run inside the kubeboot repository or set %s", name, candidates[:min(2, len(candidates))], env)
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
