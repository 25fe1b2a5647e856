package testenv

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// TestKubernetesVersionMatchesToolsModule keeps the cache key honest: the
// cached binary is keyed by KubernetesVersion, which must be the version the
// apiserverbuild module builds.
func TestKubernetesVersionMatchesToolsModule(t *testing.T) {
	dir, err := toolsModuleDir()
	if err != nil {
		t.Fatal(err)
	}
	mod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^require k8s\.io/kubernetes (v\S+)$`).FindSubmatch(mod)
	if m == nil {
		t.Fatalf("%s/go.mod does not require k8s.io/kubernetes on one line", dir)
	}
	if got := string(m[1]); got != KubernetesVersion {
		t.Fatalf("apiserverbuild requires k8s.io/kubernetes %s, KubernetesVersion is %s", got, KubernetesVersion)
	}
}
