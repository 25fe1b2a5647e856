// Command tigera-crd-wait is a recipe: install an add-on's CRDs, then wait
// until they are really served before starting the controllers that watch
// them, with cnibootstrap.Wait.
//
// It replaces the Tigera operator's start-up (cmd/main.go): crds.Ensure
// creates or updates Calico's CRDs and returns without waiting for them to be
// Established; each controller then starts a goroutine running
// utils.WaitToAddResourceWatch (pkg/controller/utils), which polls discovery
// (isCalicoResourceReady: ServerResourcesForGroupVersion) on a ticker that
// starts at 1 s and doubles to 30 s, logging "will retry", and only then adds
// its watch.
//
// On the same injected fault — a stale CRD in the group already claims the
// kind, so the new CRD is stored but never Established — Tigera's poll finds
// the resource missing every 30 s, forever, without saying why; this recipe
// reports at once "crd ippools.crd.projectcalico.org: Established=False
// (NotAccepted), NamesAccepted=False (ListKindConflict: "IPPoolList" is
// already in use)", fails at its deadline with that reason, and once the
// stale CRD is deleted returns on the watch event, not at the next poll.
//
// RBAC: create and update on customresourcedefinitions, plus what
// cnibootstrap's package doc lists for CRDEstablished with InDiscovery.
//
//	go run ./examples/recipes/tigera-crd-wait --kubeconfig /etc/rancher/rke2/rke2.yaml
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubeboot/kubeboot/cnibootstrap"
)

const group = "crd.projectcalico.org"

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// calicoCRDs are a few of Calico's cluster-scoped CRDs.
var calicoCRDs = []struct{ plural, kind string }{
	{"clusterinformations", "ClusterInformation"},
	{"felixconfigurations", "FelixConfiguration"},
	{"ippools", "IPPool"},
	{"kubecontrollersconfigurations", "KubeControllersConfiguration"},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "tigera-crd-wait:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("tigera-crd-wait", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig (see RBAC above)")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long, naming each CRD not served")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *kubeconfig == "" {
		return errors.New("--kubeconfig (or KUBECONFIG) is required")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return err
	}
	clients, err := cnibootstrap.NewClients(cfg)
	if err != nil {
		return err
	}

	// crds.Ensure: create each CRD (Tigera also updates existing ones).
	var reqs []cnibootstrap.Requirement
	for _, c := range calicoCRDs {
		plural, kind := c.plural, c.kind
		crd := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
			"metadata": map[string]any{"name": plural + "." + group},
			"spec": map[string]any{
				"group": group, "scope": "Cluster",
				"names": map[string]any{"plural": plural, "singular": strings.ToLower(kind), "kind": kind, "listKind": kind + "List"},
				"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true,
					"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}},
			},
		}}
		if _, err := clients.Dynamic.Resource(crdGVR).Create(ctx, crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create CRD %s.%s: %w", plural, group, err)
		}
		// WaitToAddResourceWatch's discovery poll, as one requirement:
		// Established, and listed in discovery for controller-runtime.
		reqs = append(reqs, cnibootstrap.CRDEstablished{CRD: plural + "." + group, InDiscovery: true})
	}

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	said := map[string]string{} // requirement → the reason last printed
	err = cnibootstrap.Wait(ctx, clients, reqs, cnibootstrap.WithProgress(func(unmet []cnibootstrap.Unmet) {
		for _, u := range unmet {
			if said[u.Requirement] != u.Reason {
				said[u.Requirement] = u.Reason
				fmt.Fprintln(out, "waiting:", u)
			}
		}
	}))
	if err != nil {
		return err // a *cnibootstrap.UnmetError naming each CRD and why
	}
	// Now the controllers can add their watches.
	for _, c := range calicoCRDs {
		list, err := clients.Dynamic.Resource(schema.GroupVersionResource{Group: group, Version: "v1", Resource: c.plural}).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s.%s served: %d objects\n", c.plural, group, len(list.Items))
	}
	return nil
}
