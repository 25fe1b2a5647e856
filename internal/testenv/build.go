package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"time"
)

// KubernetesVersion is the kube-apiserver version tests run against; it is
// pinned by the tools module in internal/testenv/apiserverbuild.
const KubernetesVersion = "v1.36.3"

// EnvKubeAPIServer names the environment variable that, when set, gives the
// path of a kube-apiserver binary to use instead of building one.
const EnvKubeAPIServer = "KUBEBOOT_KUBE_APISERVER"

// KubeAPIServerBinary returns the path of a kube-apiserver binary: the one
// named by KUBEBOOT_KUBE_APISERVER, or one built from the pinned
// k8s.io/kubernetes into the user cache directory (about five minutes cold
// on two cores, once; later calls find it at once). Concurrent callers in
// other processes wait on a file lock rather than building twice. logf, if
// not nil, is told when a build starts and ends.
func KubeAPIServerBinary(ctx context.Context, logf func(format string, args ...any)) (string, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if p := os.Getenv(EnvKubeAPIServer); p != "" {
		if err := checkExecutable(p); err != nil {
			return "", fmt.Errorf("testenv: %s=%s: %w", EnvKubeAPIServer, p, err)
		}
		return p, nil
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("testenv: no user cache dir for the kube-apiserver build: %w", err)
	}
	dir := filepath.Join(cache, "kubeboot", "kube-apiserver-"+KubernetesVersion+"-"+runtime.GOOS+"-"+runtime.GOARCH)
	bin := filepath.Join(dir, "kube-apiserver")
	if checkExecutable(bin) == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	unlock, err := lockFile(ctx, filepath.Join(dir, "build.lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if checkExecutable(bin) == nil { // another process built it while we waited
		return bin, nil
	}
	src, err := toolsModuleDir()
	if err != nil {
		return "", err
	}
	logf("building kube-apiserver %s into %s (about 5 minutes the first time; cached afterwards)", KubernetesVersion, dir)
	start := time.Now()
	tmp := bin + ".tmp"
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", tmp, "k8s.io/kubernetes/cmd/kube-apiserver")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("testenv: building kube-apiserver %s in %s: %w\n%s", KubernetesVersion, src, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	logf("built kube-apiserver %s in %s", KubernetesVersion, time.Since(start).Round(time.Second))
	return bin, nil
}

// toolsModuleDir finds internal/testenv/apiserverbuild: next to this source
// file (tests and `go run` keep source paths), or else above the working
// directory (a -trimpath build run inside the repository).
func toolsModuleDir() (string, error) {
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
	return "", fmt.Errorf("testenv: the apiserverbuild module was not found (looked in %v); run inside the kubeboot repository or set %s", candidates[:min(2, len(candidates))], EnvKubeAPIServer)
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
func lockFile(ctx context.Context, path string) (func(), error) {
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
			return nil, fmt.Errorf("testenv: waiting for another process building kube-apiserver (lock %s): %w", path, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}
