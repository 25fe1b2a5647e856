package main

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kubeboot/kubeboot/internal/testenv"
)

// chaosDuration is how long each TestChaos run injects faults.
const chaosDuration = 2 * time.Minute

// TestChaos runs the demonstration with two minutes of chaos, once with a
// fixed seed and once with a random one (printed, so a failure can be
// replayed with --seed): faults drawn from every kind, one at a time, while
// the bootstrap hooks run again. It fails on any invariant the run
// reports broken (an empty address set, a promotion of a learner that was
// killed, etcd without an answering quorum, a hook round that did not
// succeed, a cluster that did not become whole again), and if a goroutine
// or a child process is left once Run has returned.
func TestChaos(t *testing.T) {
	testenv.AwaitNoLeaks(t, testenv.IgnoreKilledEtcdPeerHandler())
	for _, seed := range []uint64{1, rand.Uint64()} {
		t.Run("seed="+strconv.FormatUint(seed, 10), func(t *testing.T) {
			t.Logf("chaos seed %d: replay with go run ./examples/controlplane --chaos %s --seed %d", seed, chaosDuration, seed)
			before := childProcesses(t)
			var out bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), chaosDuration+6*time.Minute)
			defer cancel()
			res, err := Run(ctx, Config{Members: 3, Chaos: chaosDuration, Seed: seed, Out: &out, Log: &out})
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, out.String())
			}
			rep := res.Chaos
			if rep == nil || rep.Seed != seed {
				t.Fatalf("chaos report %+v, want one for seed %d", rep, seed)
			}
			if len(rep.Violations) != 0 {
				t.Errorf("violations: %v", rep.Violations)
			}
			if len(rep.Steps) < 3 || rep.Probes < 10 {
				t.Errorf("%d steps and %d monitor readings in %s: the chaos did not really run", len(rep.Steps), rep.Probes, chaosDuration)
			}
			// What the injectors recorded on the timeline, in order, is the
			// seed's schedule: each fault on the node the schedule drew.
			want := ChaosSchedule(seed, 3, len(rep.Steps))
			var injected []string
			for _, e := range res.Events {
				if e.Node == "chaos" && e.Step == "fault" && e.Outcome == "injected" {
					injected = append(injected, e.Detail)
				}
			}
			if len(injected) != len(want) {
				t.Errorf("%d faults injected on the timeline, %d steps reported", len(injected), len(want))
			}
			for i := range min(len(injected), len(want)) {
				target := "node" + strconv.Itoa(chaosTarget(want[i], 3)+1)
				switch want[i].Fault {
				case chaosLearnerJoin, chaosDeadLearner, chaosPromoteReplyLost:
					target = "spare" + strconv.Itoa(i+1)
				}
				if w := "step " + strconv.Itoa(i+1) + ": " + want[i].Fault + " on " + target; injected[i] != w {
					t.Errorf("injected %q, the schedule says %q", injected[i], w)
				}
			}
			for i, s := range rep.Steps {
				if s.HookAttempts < 4 {
					t.Errorf("step %d (%s): %d hook attempts, want every hook run again", i+1, s.Fault, s.HookAttempts)
				}
			}
			for _, n := range res.Addresses {
				if n == "" {
					t.Errorf("empty address in %v", res.Addresses)
				}
			}
			if len(res.Addresses) != 3 || res.Voters != 3 || res.Learners != 0 {
				t.Errorf("after the chaos: agents hold %v, %d voters, %d learners; want 3 addresses, 3 voters, no learner", res.Addresses, res.Voters, res.Learners)
			}
			if left := slices.DeleteFunc(childProcesses(t), func(pid int) bool { return slices.Contains(before, pid) }); len(left) != 0 {
				t.Errorf("child processes left after Run: %v", left)
			}
			if t.Failed() {
				t.Logf("timeline:\n%s", out.String())
			}
		})
	}
}

// TestChaosScheduleReplays: the schedule is a function of the seed alone,
// it covers every fault kind and every node, and another seed gives
// another schedule.
func TestChaosScheduleReplays(t *testing.T) {
	a, b := ChaosSchedule(42, 3, 200), ChaosSchedule(42, 3, 200)
	if !slices.Equal(a, b) {
		t.Fatal("the same seed gave two schedules")
	}
	if slices.Equal(a, ChaosSchedule(43, 3, 200)) {
		t.Error("seeds 42 and 43 gave the same schedule")
	}
	faults, nodes := map[string]bool{}, map[int]bool{}
	for _, s := range a {
		faults[s.Fault], nodes[s.Node] = true, true
		if s.Pause < 200*time.Millisecond || s.Pause >= time.Second || s.Node < 0 || s.Node > 2 {
			t.Errorf("step %+v out of range", s)
		}
	}
	if len(faults) != len(ChaosFaults) || len(nodes) != 3 {
		t.Errorf("200 steps covered faults %v and nodes %v", faults, nodes)
	}
}

// childProcesses lists the processes whose parent is this test process.
func childProcesses(t *testing.T) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces; cut after ')'.
		rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
		fields := strings.Fields(rest)
		if len(fields) > 1 && fields[1] == strconv.Itoa(self) && fields[0] != "Z" {
			pids = append(pids, pid)
		}
	}
	return pids
}
