package testenv

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// WriteStaticPod writes pod as the manifest <StaticPodDir>/<pod name>.json,
// replacing any manifest of that name atomically: the content goes to a
// hidden temporary file in the same directory (the kubelet skips files
// whose name starts with a dot), is synced, and is renamed over the
// manifest, so the kubelet reads the old manifest or the new one, never half
// of one. apiVersion and kind are filled in; pod itself is not changed.
// A nil pod or one without a name is an error.
func (n *Node) WriteStaticPod(pod *corev1.Pod) error {
	if pod == nil {
		return errors.New("testenv: WriteStaticPod: nil pod")
	}
	if pod.Name == "" {
		return errors.New("testenv: WriteStaticPod: pod has no name")
	}
	p := pod.DeepCopy()
	p.APIVersion, p.Kind = "v1", "Pod"
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return fmt.Errorf("testenv: WriteStaticPod %s: %w", pod.Name, err)
	}
	return n.WriteStaticPodManifest(pod.Name+".json", b)
}

// WriteStaticPodManifest writes data (YAML or JSON) as the manifest file
// name in the static pod directory, atomically as WriteStaticPod does. The
// name must be a plain file name not starting with a dot.
func (n *Node) WriteStaticPodManifest(name string, data []byte) error {
	if err := checkManifestName(name); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(n.staticPodDir, "."+name+".tmp-")
	if err != nil {
		return fmt.Errorf("testenv: static pod manifest %s: %w", name, err)
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(n.staticPodDir, name))
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("testenv: static pod manifest %s: %w", name, err)
	}
	return nil
}

// RemoveStaticPod removes the manifest WriteStaticPod wrote for podName;
// the kubelet then stops the pod and deletes its mirror pod. Removing a
// manifest that is not there is not an error.
func (n *Node) RemoveStaticPod(podName string) error {
	return n.RemoveStaticPodManifest(podName + ".json")
}

// RemoveStaticPodManifest removes the manifest file name from the static
// pod directory. Removing a file that is not there is not an error.
func (n *Node) RemoveStaticPodManifest(name string) error {
	if err := checkManifestName(name); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(n.staticPodDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("testenv: remove static pod manifest %s: %w", name, err)
	}
	return nil
}

func checkManifestName(name string) error {
	if name == "" || strings.HasPrefix(name, ".") || strings.ContainsRune(name, filepath.Separator) {
		return fmt.Errorf("testenv: static pod manifest name %q: want a plain file name not starting with a dot", name)
	}
	return nil
}

// Container environment variables the hollow kubelet's fake runtime reads
// when it creates a container (see FakeExit).
const (
	EnvFakeExitCode  = "KUBEBOOT_FAKE_EXIT_CODE"
	EnvFakeExitAfter = "KUBEBOOT_FAKE_EXIT_AFTER"
)

// FakeExit returns container environment that makes a hollow kubelet's fake
// runtime end the container with exit code code once it has run for after
// (a negative after counts as 0). Without it a fake container runs until
// the kubelet stops it. A Job's pod with FakeExit(0, ...) succeeds, with a
// non-zero code it fails; with restartPolicy Always the kubelet restarts
// the container, with its back-off.
func FakeExit(code int32, after time.Duration) []corev1.EnvVar {
	return []corev1.EnvVar{
		{Name: EnvFakeExitCode, Value: fmt.Sprint(code)},
		{Name: EnvFakeExitAfter, Value: max(after, 0).String()},
	}
}
