// Package hooks runs control-plane startup hooks as a dependency graph.
//
// # Why
//
// RKE2 v1.31.8 released its startup hooks, one after another, behind a
// single "apiserver ready" gate. During an upgrade the etcd and
// kube-apiserver static pods were being recreated: the gate had opened on
// the old apiserver, a hook hit it while it went away, failed, and the
// hook's Fatalf took the whole process down (rke2 #8269, fixed in
// v1.31.9-rc2). kubeadm's phase runner has the same shape, sequential and
// only checking that a dependency appears earlier in the list; the
// kube-apiserver's post-start hooks start all at once, in no order, and any
// error is fatal.
//
// This package makes the other choices. Each Hook names the hooks it runs
// After and an optional Gate it waits for; independent hooks run
// concurrently; the Gate is awaited again before every retry, so a hook
// whose apiserver goes away waits for it to come back instead of failing;
// each attempt has a Timeout and a Retry policy; a hook that fails for
// good either aborts the run (cancelling what is in flight, with a cause
// naming it) or lets independent branches go on (Continue); and nothing
// calls os.Exit. Run validates the graph before running anything (unknown
// names, cycles shown as "a → b → c → a") and says afterwards what ran,
// when, and why anything did not.
//
// # Use
//
// A Gate is a plain func(ctx) error; plug a readiness wait into it:
//
//	r, err := hooks.New(hooks.WithConcurrency(4), hooks.WithLogger(log))
//	...
//	apiserverUp := func(ctx context.Context) error { return readiness.Wait(ctx, apiserverReady) }
//	err = r.Add(
//		hooks.Hook{Name: "crds", Gate: apiserverUp, Run: applyCRDs, Timeout: time.Minute, Retry: retry},
//		hooks.Hook{Name: "rbac", Gate: apiserverUp, Run: applyRBAC},
//		hooks.Hook{Name: "cni", After: []string{"crds", "rbac"}, Gate: apiserverUp, Run: deployCNI},
//		hooks.Hook{Name: "metrics", After: []string{"cni"}, Run: deployMetrics, OnFailure: hooks.Continue},
//	)
//	...
//	// Not ready until every hook has succeeded:
//	mux.HandleFunc("/readyz/hooks", func(w http.ResponseWriter, req *http.Request) {
//		if err := r.Check(req.Context()); err != nil {
//			http.Error(w, err.Error(), http.StatusServiceUnavailable)
//		}
//	})
//	if err := r.Run(ctx); err != nil {
//		var re *hooks.RunError
//		errors.As(err, &re) // re.Report: every hook's state, attempts, timings; the critical path
//	}
//
// Observe a run with WithObserver (gate waiting, started, attempt failed
// with the next delay, succeeded, failed, skipped, canceled), inspect it
// with Report, check it with Check, and draw the graph with Plan and
// Plan.DOT.
//
// Run blocks until every hook it started has returned. Hooks must honour
// their context: a hook's Run or Gate still running a grace period
// (WithGracePeriod, 10 s by default) after its context ended is abandoned
// — the hook fails with ErrAbandoned and its goroutine, left running the
// hook's function, is the only one that may outlive Run. Every user
// callback (Run, Gate, Retry and its policy, the observer, the clock, the
// logger, the methods of errors hooks return) is contained: a panic, or
// runtime.Goexit, fails its hook or is reported, and never reaches the
// caller, kills the process, or leaves a lock of the Runner held.
package hooks
