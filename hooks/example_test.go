package hooks_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/cenkalti/backoff/v4"

	"github.com/kubeboot/kubeboot/hooks"
)

// A control plane's add-on hooks: CRDs and RBAC once the apiserver is up
// (the CRDs on the second try), then the CNI, then CoreDNS and an optional
// metrics-server whose failure only costs its own dashboard.
func Example() {
	// apiserverUp stands in for a readiness wait, such as kubeboot's
	// readiness.Wait on the apiserver's /readyz.
	apiserverUp := func(ctx context.Context) error { return nil }
	noop := func(ctx context.Context) error { return nil }
	refusals := 1

	r, err := hooks.New(hooks.WithConcurrency(4))
	if err != nil {
		fmt.Println(err)
		return
	}
	err = r.Add(
		hooks.Hook{
			Name:  "crds",
			Gate:  apiserverUp,
			Retry: func() backoff.BackOff { return backoff.WithMaxRetries(&backoff.ZeroBackOff{}, 3) },
			Run: func(ctx context.Context) error {
				if refusals > 0 {
					refusals--
					return errors.New("connection refused")
				}
				return nil
			},
		},
		hooks.Hook{Name: "rbac", Gate: apiserverUp, Run: noop},
		hooks.Hook{Name: "cni", After: []string{"crds", "rbac"}, Gate: apiserverUp, Run: noop},
		hooks.Hook{Name: "coredns", After: []string{"cni"}, Run: noop},
		hooks.Hook{
			Name:      "metrics-server",
			After:     []string{"cni"},
			OnFailure: hooks.Continue,
			Run: func(ctx context.Context) error {
				return hooks.Permanent(errors.New("image not found"))
			},
		},
		hooks.Hook{Name: "dashboard", After: []string{"metrics-server"}, Run: noop},
	)
	if err != nil {
		fmt.Println(err)
		return
	}

	plan, err := r.Plan()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("levels:", plan.Levels)

	err = r.Run(context.Background())
	for _, h := range r.Report().Hooks {
		fmt.Printf("%-14s %-9s attempts=%d\n", h.Name, h.State, h.Attempts)
	}
	var runErr *hooks.RunError
	if errors.As(err, &runErr) {
		fmt.Println(err)
	}
	// Output:
	// levels: [[crds rbac] [cni] [coredns metrics-server] [dashboard]]
	// crds           succeeded attempts=2
	// rbac           succeeded attempts=1
	// cni            succeeded attempts=1
	// coredns        succeeded attempts=1
	// metrics-server failed    attempts=1
	// dashboard      skipped   attempts=0
	// hooks: 2 of 6 hooks did not succeed: hook "metrics-server" failed: attempt 1: image not found; hook "dashboard" skipped: dependency "metrics-server" failed
}

func ExamplePlan_DOT() {
	var r hooks.Runner
	noop := func(ctx context.Context) error { return nil }
	err := r.Add(
		hooks.Hook{Name: "etcd", Run: noop},
		hooks.Hook{Name: "apiserver", After: []string{"etcd"}, Run: noop, Gate: noop},
		hooks.Hook{Name: "addons", After: []string{"apiserver"}, Run: noop, OnFailure: hooks.Continue},
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	plan, err := r.Plan()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(plan.DOT())
	// Output:
	// digraph hooks {
	// 	rankdir=LR;
	// 	"etcd";
	// 	"apiserver" [shape=box];
	// 	"addons" [style=dashed];
	// 	"etcd" -> "apiserver";
	// 	"apiserver" -> "addons";
	// }
}
