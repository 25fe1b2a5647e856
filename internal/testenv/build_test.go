package testenv

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestKubernetesVersionMatchesToolsModule keeps the cache key honest: a
// cached binary is keyed by its version, which must be the version that
// version's tools module builds; and the default is a supported version.
func TestKubernetesVersionMatchesToolsModule(t *testing.T) {
	dir, err := toolsModuleDir(EnvKubeAPIServer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resolveKubernetesVersion(KubernetesVersion); err != nil {
		t.Errorf("default KubernetesVersion: %v", err)
	}
	for _, v := range KubernetesVersions() {
		mod, err := os.ReadFile(filepath.Join(dir, kubeAPIServer.modFile(v)))
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`(?m)^(?:require)?\s+k8s\.io/kubernetes (v\S+)$`).FindSubmatch(mod)
		if m == nil {
			t.Fatalf("%s does not require k8s.io/kubernetes", kubeAPIServer.modFile(v))
		}
		if got := string(m[1]); got != v {
			t.Errorf("%s requires k8s.io/kubernetes %s, want %s", kubeAPIServer.modFile(v), got, v)
		}
		// Every staging module is replaced with the published v0.<minor>.<patch>.
		staging := "v0." + strings.TrimPrefix(v, "v1.")
		for _, r := range regexp.MustCompile(`(?m)^\s+(k8s\.io/\S+) => (\S+) (\S+)$`).FindAllSubmatch(mod, -1) {
			if string(r[1]) != string(r[2]) || string(r[3]) != staging {
				t.Errorf("%s: replace %s => %s %s, want %s", kubeAPIServer.modFile(v), r[1], r[2], r[3], staging)
			}
		}
	}
	etcdDir, err := moduleDir("etcdbuild", EnvEtcd)
	if err != nil {
		t.Fatal(err)
	}
	mod, err := os.ReadFile(filepath.Join(etcdDir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^require go\.etcd\.io/etcd/server/v3 ` + regexp.QuoteMeta(EtcdVersion) + `$`).Match(mod) {
		t.Errorf("etcdbuild/go.mod does not require go.etcd.io/etcd/server/v3 %s", EtcdVersion)
	}
}

// TestVersionSelection: the environment variable selects a supported
// version by its full name or its minor, and an unsupported one is an error
// at every binary lookup, not a silent default.
func TestVersionSelection(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", KubernetesVersion}, {"v1.35.4", "v1.35.4"}, {"1.35.4", "v1.35.4"}, {"1.37", "v1.37.2"}, {"v1.36", "v1.36.3"},
	} {
		t.Setenv(EnvKubernetesVersion, tc.in)
		got, err := SelectedKubernetesVersion()
		if err != nil || got != tc.want {
			t.Errorf("%s=%q: got %q, %v; want %q", EnvKubernetesVersion, tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"v1.34.0", "1.36.2", "latest"} {
		t.Setenv(EnvKubernetesVersion, bad)
		if _, err := SelectedKubernetesVersion(); err == nil {
			t.Errorf("%s=%q: no error", EnvKubernetesVersion, bad)
		}
		if _, err := KubeAPIServerBinary(context.Background(), nil); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("KubeAPIServerBinary with %s=%q: %v", EnvKubernetesVersion, bad, err)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"", ""}, {"embedded", ""}, {EmbeddedEtcdVersion(), ""}, {"v3.7.3", EtcdVersion}, {"3.7", EtcdVersion},
	} {
		got, err := resolveEtcdVersion(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("etcd version %q: got %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := resolveEtcdVersion("v3.5.0"); err == nil {
		t.Error("etcd version v3.5.0: no error")
	}
	t.Setenv(EnvEtcdVersion, "v3.4")
	if _, err := StartCluster(context.Background()); err == nil || !strings.Contains(err.Error(), "v3.4") {
		t.Errorf("StartCluster with %s=v3.4: %v", EnvEtcdVersion, err)
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
	for _, v := range KubernetesVersions() {
		for _, c := range components {
			k, err := c.cacheKey(dir, v)
			if err != nil {
				t.Fatal(err)
			}
			if other, dup := seen[k]; dup {
				t.Errorf("%s %s and %s share cache key %s", c.name, v, other, k)
			}
			seen[k] = c.name + " " + v
		}
	}
	if _, err := ComponentBinary(context.Background(), "kubectl", nil); err == nil {
		t.Error("ComponentBinary(kubectl): no error")
	}
}

// TestVersionTags: every supported version gets its own build tag, and the
// hollow kubelet's 1.35 file is selected by exactly the tag 1.35 builds with.
func TestVersionTags(t *testing.T) {
	seen := map[string]bool{}
	for _, v := range KubernetesVersions() {
		tag := versionTag(v)
		if seen[tag] {
			t.Errorf("%s: tag %s used twice", v, tag)
		}
		seen[tag] = true
	}
	if got := versionTag("v1.35.4"); got != "kubeboot_k8s_1_35" {
		t.Errorf("versionTag(v1.35.4) = %s", got)
	}
	dir, err := toolsModuleDir(EnvHollowKubelet)
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(filepath.Join(dir, "cmd", "hollow-kubelet", "cri_1_35.go"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(src), "//go:build "+versionTag("v1.35.4")+"\n") {
		t.Errorf("cri_1_35.go is not built by tag %s", versionTag("v1.35.4"))
	}
}
