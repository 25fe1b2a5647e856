package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kubeboot/kubeboot/hooks"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.LeakOptions()...)
}

// TestControlPlaneExample runs the demonstration in-process for the default
// path and every fault, and checks the end state and that each fault really
// happened.
func TestControlPlaneExample(t *testing.T) {
	for _, fault := range append([]string{FaultNone}, Faults...) {
		name := fault
		if name == "" {
			name = "default"
		}
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			res, err := Run(ctx, Config{Members: 3, Fault: fault, Out: &out, Log: &out})
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, out.String())
			}
			if res.Voters != 3 || res.Learners != 0 {
				t.Errorf("voters %d learners %d, want 3 and 0", res.Voters, res.Learners)
			}
			if len(res.Addresses) != 1 {
				t.Errorf("agent addresses %v, want the one apiserver", res.Addresses)
			}
			if len(res.Hooks.Hooks) == 0 {
				t.Fatal("no hooks ran")
			}
			for _, h := range res.Hooks.Hooks {
				if h.State != hooks.Succeeded {
					t.Errorf("hook %s ended %s", h.Name, h.State)
				}
			}
			if !res.FaultObserved {
				t.Errorf("fault %q not observed", fault)
			}
			if fault != FaultNone {
				injected, observed := false, false
				for _, e := range res.Events {
					injected = injected || (e.Step == "fault" && e.Outcome == "injected")
					observed = observed || (e.Step == "fault" && e.Outcome == "observed")
				}
				if !injected || !observed {
					t.Errorf("fault %s: injected=%v observed=%v in the timeline", fault, injected, observed)
				}
			}
			switch fault {
			case FaultAPIServerRestart:
				// Exactly two attempts: the first failed on the restarting
				// apiserver, the second waited on the gate until it was back
				// (blind retries would have failed again meanwhile).
				crds := findHook(res.Hooks, "crds")
				if crds.Attempts != 2 {
					t.Errorf("crds hook ran %d time(s), want 2: one failure on the restarting apiserver, one success after the gate", crds.Attempts)
				}
			case FaultCalicoRace:
				if !strings.Contains(out.String(), "datastoreReady") {
					t.Errorf("timeline does not show the ClusterInformation going ready:\n%s", out.String())
				}
				// The CNI hook's only attempt started after the object was
				// created not ready; startCNI itself refuses a not-ready one.
				if cni := findHook(res.Hooks, "cni"); cni.Attempts != 1 {
					t.Errorf("cni hook ran %d times, want once, released only when everything was usable", cni.Attempts)
				}
				if !eventBefore(res.Events, "injected", "hook cni") {
					t.Errorf("the cni hook started before ClusterInformation existed")
				}
			}
			if t.Failed() {
				t.Logf("timeline:\n%s", out.String())
			}
		})
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{{Members: 0}, {Members: 3, Fault: "nope"}, {Members: 1, Fault: FaultPromoteReplyLost}} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("Run(%+v) succeeded, want a configuration error", cfg)
		}
	}
}

// eventBefore reports whether an event with outcome first precedes the
// first "started" event of step then.
func eventBefore(events []Event, first, then string) bool {
	seen := false
	for _, e := range events {
		if e.Outcome == first {
			seen = true
		}
		if e.Step == then && e.Outcome == "started" {
			return seen
		}
	}
	return false
}

func findHook(r hooks.Report, name string) hooks.HookReport {
	for _, h := range r.Hooks {
		if h.Name == name {
			return h
		}
	}
	return hooks.HookReport{}
}
