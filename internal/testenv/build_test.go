package testenv

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// TestKubernetesVersionMatchesToolsModule keeps the cache key honest: the
// cached binary is keyed by KubernetesVersion, which must be the version the
// apiserverbuild module builds.
func TestKubernetesVersionMatchesToolsModule(t *testing.T) {
	dir, err := toolsModuleDir(EnvKubeAPIServer)
	if err != nil {
		t.Fatal(err)
	}
	mod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^(?:require)?\s+k8s\.io/kubernetes (v\S+)$`).FindSubmatch(mod)
	if m == nil {
		t.Fatalf("%s/go.mod does not require k8s.io/kubernetes", dir)
	}
	if got := string(m[1]); got != KubernetesVersion {
		t.Fatalf("apiserverbuild requires k8s.io/kubernetes %s, KubernetesVersion is %s", got, KubernetesVersion)
	}
}

// TestFakeExitMatchesHollowKubelet keeps FakeExit's variable names equal to
// the ones the hollow kubelet's fake runtime reads (they live in another
// module).
func TestFakeExitMatchesHollowKubelet(t *testing.T) {
	dir, err := toolsModuleDir(EnvHollowKubelet)
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(filepath.Join(dir, "cmd", "hollow-kubelet", "runtime.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{EnvFakeExitCode, EnvFakeExitAfter} {
		if !regexp.MustCompile(`(?m)^\s*EnvExit\w+\s*=\s*"` + v + `"$`).Match(src) {
			t.Errorf("hollow-kubelet runtime.go does not read %s", v)
		}
	}
	env := FakeExit(3, -time.Second)
	if len(env) != 2 || env[0].Value != "3" || env[1].Value != "0s" {
		t.Errorf("FakeExit(3, -1s) = %+v", env)
	}
}

// TestComponentCacheKeys: each component builds into its own directory, and
// the hollow kubelet's key follows its sources.
func TestComponentCacheKeys(t *testing.T) {
	dir, err := toolsModuleDir(EnvHollowKubelet)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, c := range components {
		k, err := c.cacheKey(dir)
		if err != nil {
			t.Fatal(err)
		}
		if other, dup := seen[k]; dup {
			t.Errorf("%s and %s share cache key %s", c.name, other, k)
		}
		seen[k] = c.name
	}
	if _, err := ComponentBinary(context.Background(), "kubectl", nil); err == nil {
		t.Error("ComponentBinary(kubectl): no error")
	}
}
