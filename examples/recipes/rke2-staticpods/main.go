// Command rke2-staticpods is a recipe: install new etcd and kube-apiserver
// static pod manifests on a node (an upgrade), then hold everything that
// needs the control plane until the new pods are up and the apiserver stays
// ready, with readiness.StaticPodReady(WithHashChangedFrom) and
// readiness.APIServerReady under readiness.WithStability.
//
// It replaces RKE2's reconcileStaticPods startup hook (pkg/rke2/spw.go):
// wait.PollImmediateWithContext every 20 s, for up to 30 minutes, dials the
// CRI socket and compares the running etcd and kube-apiserver containers with
// their manifests (checkManifestDeployed), then polls /readyz?verbose every
// 2 s; its wg.Done() releases the rest of the startup (see the
// k3s-startuphooks recipe).
//
// On the same injected fault — the new kube-apiserver pod is running but not
// Ready (its readiness probe fails) while the apiserver endpoint still
// answers /readyz with 200 — both of RKE2's conditions hold ("a container
// with the new manifest is running", "/readyz passes") and the hooks are
// released early (rke2 #8269); this recipe names the new mirror pod as not
// Ready and returns only once it is, for three checks over the stability
// window. It reads the mirror pods through the apiserver's watch (reacting
// in milliseconds, not at the next 20 s tick) and needs no CRI socket.
//
// RBAC: get, list and watch on pods in --namespace; /readyz is public.
//
//	go run ./examples/recipes/rke2-staticpods --kubeconfig /etc/rancher/rke2/rke2.yaml --node node1 \
//	    --static-pod-dir /var/lib/rancher/rke2/agent/pod-manifests --manifests etcd.yaml,kube-apiserver.yaml
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubeboot/kubeboot/readiness"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "rke2-staticpods:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("rke2-staticpods", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig (see RBAC above)")
	node := fs.String("node", "", "this node's name (mirror pods are <pod>-<node>)")
	dir := fs.String("static-pod-dir", "", "the kubelet's static pod directory")
	manifests := fs.String("manifests", "", "comma-separated new manifests; each file's base name is its pod's name (etcd.yaml → etcd)")
	namespace := fs.String("namespace", "kube-system", "the static pods' namespace")
	window := fs.Duration("stable-window", 2*time.Second, "the gate must pass three times spanning this long")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long, saying what is not up")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *kubeconfig == "" || *node == "" || *dir == "" || *manifests == "" {
		return errors.New("--kubeconfig (or KUBECONFIG), --node, --static-pod-dir and --manifests are required")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}

	// Remember each pod's current config hash, then install its manifest.
	var checks []readiness.Check
	for _, file := range strings.Split(*manifests, ",") {
		pod := strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))
		mirror := pod + "-" + *node
		var opts []readiness.PodOption
		cur, err := kube.CoreV1().Pods(*namespace).Get(ctx, mirror, metav1.GetOptions{})
		switch {
		case err == nil && cur.Annotations["kubernetes.io/config.hash"] != "":
			opts = append(opts, readiness.WithHashChangedFrom(cur.Annotations["kubernetes.io/config.hash"]))
		case err != nil && !apierrors.IsNotFound(err):
			return fmt.Errorf("read mirror pod %s/%s: %w", *namespace, mirror, err)
		}
		if err := install(file, *dir); err != nil {
			return err
		}
		fmt.Fprintf(out, "installed %s; waiting for mirror pod %s/%s\n", filepath.Base(file), *namespace, mirror)
		checks = append(checks, readiness.StaticPodReady(kube, *namespace, mirror, opts...))
	}

	// The gate: every new pod up (not the old one), and /readyz passing —
	// all of it, three times over the window.
	gate := readiness.All(append(checks, readiness.APIServerReady(kube.Discovery().RESTClient()))...)
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	last := ""
	err = readiness.Wait(ctx, gate, readiness.WithStability(3, *window), readiness.WithObserver(func(a readiness.Attempt) {
		if a.Err != nil && a.Err.Error() != last {
			last = a.Err.Error()
			fmt.Fprintln(out, "not up:", last)
		}
	}))
	if err != nil {
		return err // a *readiness.NotReadyError with the last reason
	}
	fmt.Fprintln(out, "control plane is up: new static pods ready, kube-apiserver ready")
	return nil
}

// install copies a manifest into the static pod directory atomically: the
// kubelet skips dot files, so it sees the old manifest or the new one.
func install(file, dir string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".manifest-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, filepath.Base(file)))
}
