// Command k3s-startuphooks is a recipe: a k3s/RKE2 server's startup hooks,
// run by hooks.Runner with readiness gates.
//
// It replaces k3s's StartupHooks (pkg/server/server.go, StartServer):
// wg.Add(len(config.StartupHooks)), then each hook(ctx, wg, StartupHookArgs)
// starts a goroutine of its own that blocks on <-args.APIServerReady — a
// channel closed once, the first time the apiserver answered, and never
// re-armed — does its work and calls wg.Done(); runControllers waits on
// StartupHooksWg.Wait() before it deploys manifests. RKE2 registers its hooks
// there (pkg/rke2: setNetworkPolicies, setClusterRoles,
// restrictServiceAccounts) and ends them with logrus.Fatalf on error. No
// order between hooks, no retry, and a hook that never calls wg.Done blocks
// the manifests forever without a name.
//
// On the same injected fault — the kube-apiserver is down (its static pod
// being replaced) when the hooks start — k3s's hooks pass the closed
// APIServerReady channel, hit the dead apiserver and RKE2's Fatalf kills the
// server (rke2 #8269); here every hook's gate waits until the apiserver is
// ready three times over a second, the hooks run once it is back, and a hook
// that still fails is retried, then reported by name — the process lives.
//
//	go run ./examples/recipes/k3s-startuphooks --kubeconfig /etc/rancher/rke2/rke2.yaml
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubeboot/kubeboot/hooks"
	"github.com/kubeboot/kubeboot/readiness"
)

// namespaces get RKE2's default NetworkPolicy.
var namespaces = []string{metav1.NamespaceSystem, metav1.NamespaceDefault, metav1.NamespacePublic}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "k3s-startuphooks:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("k3s-startuphooks", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "admin kubeconfig")
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
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	var mu sync.Mutex // hooks and gates report from goroutines of their own
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, format+"\n", args...)
	}

	// APIServerReady, re-checked before every attempt: /readyz passing three
	// times over a second, not "it answered once".
	lastReason := ""
	apiserverUp := readiness.Gate(readiness.APIServerReady(kube.Discovery().RESTClient()),
		readiness.WithStability(3, time.Second),
		readiness.WithObserver(func(a readiness.Attempt) {
			mu.Lock()
			defer mu.Unlock()
			if a.Err != nil && a.Err.Error() != lastReason {
				lastReason = a.Err.Error()
				fmt.Fprintln(out, "gate: apiserver not ready:", lastReason)
			}
		}))
	retry := func() backoff.BackOff {
		b := backoff.NewExponentialBackOff()
		b.MaxElapsedTime = 0 // the gate does the waiting
		return backoff.WithMaxRetries(b, 8)
	}
	hook := func(name string, after []string, do func(context.Context) error) hooks.Hook {
		return hooks.Hook{Name: name, After: after, Gate: apiserverUp, Run: do, Timeout: 30 * time.Second, Retry: retry}
	}

	runner, err := hooks.New(hooks.WithObserver(func(e hooks.Event) { say("hook %s", e) }))
	if err != nil {
		return err
	}
	err = runner.Add(
		hook("network-policies", nil, func(ctx context.Context) error { // RKE2 setNetworkPolicies
			for _, ns := range namespaces {
				np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default-network-policy", Namespace: ns},
					Spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}}}}}}
				if _, err := kube.NetworkingV1().NetworkPolicies(ns).Create(ctx, np, metav1.CreateOptions{}); !apierrors.IsAlreadyExists(err) && err != nil {
					return err
				}
			}
			return nil
		}),
		hook("cluster-roles", nil, func(ctx context.Context) error { // RKE2 setClusterRoles
			role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "kubeboot-recipe-node-reader"},
				Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}}}}
			if _, err := kube.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); !apierrors.IsAlreadyExists(err) && err != nil {
				return err
			}
			return nil
		}),
		// What runControllers did after StartupHooksWg.Wait(), as a hook
		// that names what it waits for.
		hook("deploy-manifests", []string{"network-policies", "cluster-roles"}, func(ctx context.Context) error {
			say("startup hooks done: deploying manifests")
			return nil
		}),
	)
	if err != nil {
		return err
	}
	runErr := runner.Run(ctx) // a *hooks.RunError names every hook that did not succeed
	for _, h := range runner.Report().Hooks {
		say("%-17s %-9s attempts=%d", h.Name, h.State, h.Attempts)
	}
	return runErr
}
