package testenv

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestStaticPodManifestWrites checks the file side of WriteStaticPod: the
// manifest decodes to the pod (with apiVersion and kind), no temporary file
// is left where the kubelet would read it, a rewrite replaces it, and bad
// input is refused without touching the directory.
func TestStaticPodManifestWrites(t *testing.T) {
	n := &Node{name: "n", staticPodDir: t.TempDir()}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "etcd", Namespace: "kube-system"}, Spec: podSpec(imageV1)}
	require.NoError(t, n.WriteStaticPod(pod))
	require.Empty(t, pod.Kind, "WriteStaticPod changed its argument")
	pod.Spec.Containers[0].Image = imageV2
	require.NoError(t, n.WriteStaticPod(pod))

	entries, err := os.ReadDir(n.StaticPodDir())
	require.NoError(t, err)
	require.Len(t, entries, 1, "only the manifest, no temporary file")
	require.Equal(t, "etcd.json", entries[0].Name())
	b, err := os.ReadFile(filepath.Join(n.StaticPodDir(), "etcd.json"))
	require.NoError(t, err)
	var got corev1.Pod
	require.NoError(t, json.Unmarshal(b, &got))
	require.Equal(t, "v1", got.APIVersion)
	require.Equal(t, "Pod", got.Kind)
	require.Equal(t, imageV2, got.Spec.Containers[0].Image)

	require.ErrorContains(t, n.WriteStaticPod(nil), "nil pod")
	require.ErrorContains(t, n.WriteStaticPod(&corev1.Pod{}), "no name")
	for _, bad := range []string{"", ".hidden.yaml", "sub/x.yaml"} {
		require.Error(t, n.WriteStaticPodManifest(bad, []byte("{}")), "name %q", bad)
		require.Error(t, n.RemoveStaticPodManifest(bad), "name %q", bad)
	}

	require.NoError(t, n.RemoveStaticPod("etcd"))
	require.NoError(t, n.RemoveStaticPod("etcd"), "removing a missing manifest")
	entries, err = os.ReadDir(n.StaticPodDir())
	require.NoError(t, err)
	require.Empty(t, entries)
}

// TestNodeAndControlPlaneBadInput: bad arguments are errors naming what is
// wrong, before anything is built or started.
func TestNodeAndControlPlaneBadInput(t *testing.T) {
	ctx := t.Context()
	_, err := StartNodes(ctx, nil, []string{"a"})
	require.ErrorContains(t, err, "nil *APIServer")
	_, err = StartNode(ctx, nil, "a")
	require.ErrorContains(t, err, "nil *APIServer")
	_, err = StartControlPlane(ctx, nil)
	require.ErrorContains(t, err, "nil *APIServer")

	a := &APIServer{}
	_, err = StartNodes(ctx, a, nil)
	require.ErrorContains(t, err, "no node names")
	for _, bad := range []string{"", "Upper", "under_score", "-dash", strings.Repeat("x", 64)} {
		_, err = StartNode(ctx, a, bad)
		require.ErrorContains(t, err, "invalid node name", "name %q", bad)
	}
	_, err = StartNodes(ctx, a, []string{"a", "b", "a"})
	require.ErrorContains(t, err, `"a" given twice`)
}
