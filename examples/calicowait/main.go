// Command calicowait blocks until everything Calico needs from the cluster
// is really usable — the ClusterInformation CRD Established (not merely
// created), ClusterInformation "default" with datastoreReady true, the
// calico-typha ClusterRole with its rules, and calico-typha's permission
// effective per a SubjectAccessReview — and prints what is still missing as
// it changes. Run it before starting calico-node and typha (rke2 #7808).
// The requirement list is calico.Requirements in examples/internal/calico.
//
//	go run ./examples/calicowait --kubeconfig /etc/rancher/rke2/rke2.yaml --timeout 5m
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

	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubeboot/kubeboot/cnibootstrap"
	"github.com/kubeboot/kubeboot/examples/internal/calico"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "calicowait:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("calicowait", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig with the RBAC the package doc lists")
	typhaNS := fs.String("typha-namespace", "kube-system", "namespace of the calico-typha ServiceAccount")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long, listing what is missing")
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
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	last := ""
	err = cnibootstrap.Wait(ctx, clients, calico.Requirements(*typhaNS), cnibootstrap.WithProgress(func(unmet []cnibootstrap.Unmet) {
		lines := make([]string, len(unmet))
		for i, u := range unmet {
			lines[i] = "  - " + u.String()
		}
		if s := strings.Join(lines, "\n"); s != last {
			last = s
			fmt.Fprintf(out, "%d unmet:\n%s\n", len(unmet), s)
		}
	}))
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "calico prerequisites ready")
	return nil
}
