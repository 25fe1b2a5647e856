package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kubeboot/kubeboot/hooks"
)

// printSummary prints the hooks report as a table and the per-phase times,
// or one JSON line with both.
func printSummary(out io.Writer, res *Result, runErr error, asJSON bool) {
	if asJSON {
		type hookRow struct {
			Name      string `json:"name"`
			State     string `json:"state"`
			Attempts  int    `json:"attempts"`
			GateWait  int64  `json:"gate_wait_ms"`
			Running   int64  `json:"running_ms"`
			StartMS   int64  `json:"start_ms"`
			EndMS     int64  `json:"end_ms"`
			SkippedBy string `json:"skipped_by,omitempty"`
		}
		s := struct {
			Type          string       `json:"type"`
			OK            bool         `json:"ok"`
			Error         string       `json:"error,omitempty"`
			Voters        int          `json:"voters"`
			Addresses     []string     `json:"addresses"`
			FaultObserved bool         `json:"fault_observed"`
			Hooks         []hookRow    `json:"hooks"`
			CriticalPath  []string     `json:"critical_path"`
			Phases        []Phase      `json:"phases"`
			AddOnHooks    []hookRow    `json:"addon_upgrade_hooks,omitempty"`
			AddOnError    string       `json:"addon_upgrade_error,omitempty"`
			Chaos         *ChaosReport `json:"chaos,omitempty"`
		}{Chaos: res.Chaos, Type: "summary", OK: runErr == nil, Voters: res.Voters, Addresses: res.Addresses, FaultObserved: res.FaultObserved,
			CriticalPath: res.Hooks.CriticalPath, Phases: res.Phases}
		if runErr != nil {
			s.Error = runErr.Error()
		}
		rows := func(r hooks.Report) []hookRow {
			var out []hookRow
			for _, h := range r.Hooks {
				out = append(out, hookRow{h.Name, h.State.String(), h.Attempts, h.GateWait.Milliseconds(),
					h.Running.Milliseconds(), h.Start.Milliseconds(), h.End.Milliseconds(), h.SkippedBy})
			}
			return out
		}
		s.Hooks = rows(res.Hooks)
		if res.AddOnUpgrade != nil {
			s.AddOnHooks = rows(res.AddOnUpgrade.Report)
		}
		if res.AddOnErr != nil {
			s.AddOnError = res.AddOnErr.Error()
		}
		b, _ := json.Marshal(s)
		fmt.Fprintln(out, string(b))
		return
	}
	printHooks(out, "hooks", res.Hooks)
	if res.AddOnUpgrade != nil {
		printHooks(out, "add-on upgrade to "+res.AddOnUpgrade.Release.Version+" hooks", res.AddOnUpgrade.Report)
		if res.AddOnErr != nil {
			fmt.Fprintf(out, "  stopped: %v\n", res.AddOnErr)
		}
	}
	if c := res.Chaos; c != nil {
		fmt.Fprintf(out, "\nchaos (seed %d): %d faults, %d monitor readings\n", c.Seed, len(c.Steps), c.Probes)
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  STEP\tFAULT\tNODE\tABSORBED IN\tHOOK ATTEMPTS")
		for i, st := range c.Steps {
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%d\n", i+1, st.Fault, st.NodeName, ms(st.Took), st.HookAttempts)
		}
		_ = tw.Flush()
		for _, v := range c.Violations {
			fmt.Fprintf(out, "  VIOLATION: %s\n", v)
		}
	}
	fmt.Fprintln(out, "\nphases:")
	var total time.Duration
	for _, p := range res.Phases {
		fmt.Fprintf(out, "  %-20s %8s\n", p.Name, ms(p.Duration))
		total += p.Duration
	}
	fmt.Fprintf(out, "  %-20s %8s\n", "total", ms(total))
	if runErr != nil {
		fmt.Fprintf(out, "\nFAILED: %v\n", runErr)
		return
	}
	fmt.Fprintf(out, "\nOK: %d voting etcd members, every node agent sees %v, %d hooks succeeded\n", res.Voters, res.Addresses, len(res.Hooks.Hooks))
	switch {
	case res.AddOnUpgrade != nil && res.AddOnErr != nil:
		fmt.Fprintln(out, "    ingress-nginx upgrade stopped at once at its failing install Job; v1 untouched")
	case res.AddOnUpgrade != nil:
		fmt.Fprintf(out, "    ingress-nginx upgraded to %s in order\n", res.AddOnUpgrade.Release.Version)
	}
}

// printHooks prints a hooks report as a table.
func printHooks(out io.Writer, title string, r hooks.Report) {
	if len(r.Hooks) == 0 {
		return
	}
	fmt.Fprintf(out, "\n%s:\n", title)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  HOOK\tSTATE\tATTEMPTS\tGATE WAIT\tRUNNING\tSTART\tEND")
	for _, h := range r.Hooks {
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\t%s\t%s\n", h.Name, h.State, h.Attempts, ms(h.GateWait), ms(h.Running), ms(h.Start), ms(h.End))
	}
	_ = tw.Flush()
	fmt.Fprintf(out, "  critical path: %s\n", strings.Join(r.CriticalPath, " → "))
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }
