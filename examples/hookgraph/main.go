// Command hookgraph runs a small graph of startup hooks against a cluster,
// the way a distribution's supervisor would after it started the control
// plane: every hook waits on a gate ("kube-apiserver ready, three times over
// a second") before each attempt, independent hooks run concurrently, a
// failed attempt is retried with backoff instead of killing the process, and
// the report says what ran, when, and why anything did not.
//
//	go run ./examples/hookgraph --kubeconfig /etc/rancher/rke2/rke2.yaml
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

	"github.com/cenkalti/backoff/v4"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubeboot/kubeboot/hooks"
	"github.com/kubeboot/kubeboot/readiness"
)

// Namespace is where the example's hooks create their objects.
const Namespace = "kubeboot-hookgraph"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "hookgraph:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("hookgraph", flag.ContinueOnError)
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

	apiserverUp := readiness.Gate(readiness.APIServerReady(kube.Discovery().RESTClient()),
		readiness.WithStability(3, time.Second))
	// Retries are bounded by count, not elapsed time: time a hook spends
	// waiting on its gate (a slow apiserver) would use up a time budget.
	retry := func() backoff.BackOff {
		b := backoff.NewExponentialBackOff()
		b.MaxElapsedTime = 0
		return backoff.WithMaxRetries(b, 10)
	}
	hook := func(name string, after []string, run func(context.Context) error) hooks.Hook {
		return hooks.Hook{Name: name, After: after, Gate: apiserverUp, Run: run, Timeout: 10 * time.Second, Retry: retry}
	}
	runner, err := hooks.New(hooks.WithObserver(func(e hooks.Event) { fmt.Fprintln(out, e) }))
	if err != nil {
		return err
	}
	err = runner.Add(
		hook("namespace", nil, func(ctx context.Context) error {
			_, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}, metav1.CreateOptions{})
			return ignoreExists(err)
		}),
		hook("config", []string{"namespace"}, func(ctx context.Context) error {
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cluster-settings", Namespace: Namespace}, Data: map[string]string{"cni": "calico"}}
			_, err := kube.CoreV1().ConfigMaps(Namespace).Create(ctx, cm, metav1.CreateOptions{})
			return ignoreExists(err)
		}),
		hook("rbac", []string{"namespace"}, func(ctx context.Context) error {
			role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "settings-reader", Namespace: Namespace},
				Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}}}}
			_, err := kube.RbacV1().Roles(Namespace).Create(ctx, role, metav1.CreateOptions{})
			return ignoreExists(err)
		}),
		hook("announce", []string{"config", "rbac"}, func(ctx context.Context) error {
			cm, err := kube.CoreV1().ConfigMaps(Namespace).Get(ctx, "cluster-settings", metav1.GetOptions{})
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "bootstrap done: cni=%s\n", cm.Data["cni"])
			return nil
		}),
	)
	if err != nil {
		return err
	}
	runErr := runner.Run(ctx)
	report := runner.Report()
	for _, h := range report.Hooks {
		fmt.Fprintf(out, "%-10s %-9s attempts=%d gate=%s run=%s\n", h.Name, h.State, h.Attempts,
			h.GateWait.Round(time.Millisecond), h.Running.Round(time.Millisecond))
	}
	fmt.Fprintf(out, "critical path: %s\n", strings.Join(report.CriticalPath, " → "))
	return runErr
}

func ignoreExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}
