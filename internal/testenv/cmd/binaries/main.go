// Command binaries finds or builds every binary the tests run — the
// Kubernetes components of the selected version (kube-apiserver,
// kube-controller-manager, kube-scheduler, hollow-kubelet; see
// testenv.Components and KUBEBOOT_KUBERNETES_VERSION) and, when
// KUBEBOOT_ETCD_VERSION asks for etcd processes, the etcd server — into the
// user cache directory and prints one shell line per binary,
//
//	export KUBEBOOT_KUBE_APISERVER='/home/me/.cache/kubeboot/.../kube-apiserver'
//
// plus the selected versions, so `eval "$(go run ./internal/testenv/cmd/binaries)"`
// points the test binaries at them and no test spends its timeout on a
// build. A variable already set is checked and kept. Build progress goes to
// stderr.
//
// Flags:
//
//	-apiserver-only    only kube-apiserver of the selected version (for test
//	                   runs that start no control plane or nodes)
//	-all-apiservers    also build kube-apiserver of every other supported
//	                   version (TestAPIServerVersions starts each one); those
//	                   are found in the cache, not exported
//	-other-versions    build nothing; print the supported Kubernetes versions
//	                   other than the selected one, one per line (what
//	                   `make test-compat` runs)
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"

	"github.com/kubeboot/kubeboot/internal/testenv"
)

func main() {
	apiserverOnly := flag.Bool("apiserver-only", false, "build only kube-apiserver of the selected version")
	allAPIServers := flag.Bool("all-apiservers", false, "also build kube-apiserver of every other supported version")
	others := flag.Bool("other-versions", false, "print the supported Kubernetes versions other than the selected one and exit")
	flag.Parse()
	if *others {
		k8s, err := testenv.SelectedKubernetesVersion()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for _, v := range testenv.KubernetesVersions() {
			if v != k8s {
				fmt.Println(v)
			}
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *apiserverOnly, *allAPIServers); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, apiserverOnly, allAPIServers bool) error {
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	k8s, err := testenv.SelectedKubernetesVersion()
	if err != nil {
		return err
	}
	etcd, err := testenv.SelectedEtcdVersion()
	if err != nil {
		return err
	}
	lines := []string{
		fmt.Sprintf("export %s=%s", testenv.EnvKubernetesVersion, shellQuote(k8s)),
		fmt.Sprintf("export %s=%s", testenv.EnvEtcdVersion, shellQuote(etcd)),
	}
	for _, c := range testenv.Components() {
		if apiserverOnly && c.Name != "kube-apiserver" {
			continue
		}
		path, err := testenv.ComponentBinary(ctx, c.Name, logf)
		if err != nil {
			return err
		}
		lines = append(lines, fmt.Sprintf("export %s=%s", c.Env, shellQuote(path)))
	}
	if etcd != testenv.EmbeddedEtcdVersion() {
		path, err := testenv.EtcdBinary(ctx, logf)
		if err != nil {
			return err
		}
		lines = append(lines, fmt.Sprintf("export %s=%s", testenv.EnvEtcd, shellQuote(path)))
	}
	if allAPIServers {
		for _, v := range testenv.KubernetesVersions() {
			if v == k8s {
				continue
			}
			if _, err := testenv.ComponentBinaryVersion(ctx, "kube-apiserver", v, logf); err != nil {
				return err
			}
		}
	}
	fmt.Println(strings.Join(lines, "\n"))
	return nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
