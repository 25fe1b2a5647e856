// Command staticpod waits until a static pod's mirror pod is really up: it
// exists, is not terminating, is Ready with every container ready, and — with
// --hash-changed-from — carries a different kubernetes.io/config.hash than
// before, so "ready" means the new pod, not the old one that is about to be
// replaced (RKE2 v1.31.8). It reacts to the pod's watch within milliseconds
// and must stay ready for --stable passes spanning --stable-window before it
// returns.
//
//	go run ./examples/staticpod --kubeconfig /etc/rancher/rke2/rke2.yaml \
//	    --pod kube-apiserver-node1 --hash-changed-from 6f1c...
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubeboot/kubeboot/readiness"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "staticpod:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("staticpod", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig allowed to get, list and watch pods in --namespace")
	namespace := fs.String("namespace", "kube-system", "the mirror pod's namespace")
	pod := fs.String("pod", "", "the mirror pod's name, <static pod>-<node>")
	oldHash := fs.String("hash-changed-from", "", "require a config hash different from this one")
	stable := fs.Int("stable", 3, "consecutive passes required")
	window := fs.Duration("stable-window", 2*time.Second, "the passes must span at least this long")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long, saying why")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *kubeconfig == "" || *pod == "" {
		return errors.New("--kubeconfig (or KUBECONFIG) and --pod are required")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	var opts []readiness.PodOption
	if *oldHash != "" {
		opts = append(opts, readiness.WithHashChangedFrom(*oldHash))
	}
	check := readiness.StaticPodReady(kube, *namespace, *pod, opts...)
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	last := ""
	err = readiness.Wait(ctx, check, readiness.WithStability(*stable, *window), readiness.WithObserver(func(a readiness.Attempt) {
		if a.Err != nil && a.Err.Error() != last {
			last = a.Err.Error()
			fmt.Fprintln(out, "not ready:", last)
		}
	}))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "mirror pod %s/%s is ready\n", *namespace, *pod)
	return nil
}
