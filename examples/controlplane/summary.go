package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
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
			Type          string    `json:"type"`
			OK            bool      `json:"ok"`
			Error         string    `json:"error,omitempty"`
			Voters        int       `json:"voters"`
			Addresses     []string  `json:"addresses"`
			FaultObserved bool      `json:"fault_observed"`
			Hooks         []hookRow `json:"hooks"`
			CriticalPath  []string  `json:"critical_path"`
			Phases        []Phase   `json:"phases"`
		}{Type: "summary", OK: runErr == nil, Voters: res.Voters, Addresses: res.Addresses, FaultObserved: res.FaultObserved,
			CriticalPath: res.Hooks.CriticalPath, Phases: res.Phases}
		if runErr != nil {
			s.Error = runErr.Error()
		}
		for _, h := range res.Hooks.Hooks {
			s.Hooks = append(s.Hooks, hookRow{h.Name, h.State.String(), h.Attempts, h.GateWait.Milliseconds(),
				h.Running.Milliseconds(), h.Start.Milliseconds(), h.End.Milliseconds(), h.SkippedBy})
		}
		b, _ := json.Marshal(s)
		fmt.Fprintln(out, string(b))
		return
	}
	if len(res.Hooks.Hooks) > 0 {
		fmt.Fprintln(out, "\nhooks:")
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  HOOK\tSTATE\tATTEMPTS\tGATE WAIT\tRUNNING\tSTART\tEND")
		for _, h := range res.Hooks.Hooks {
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\t%s\t%s\n", h.Name, h.State, h.Attempts, ms(h.GateWait), ms(h.Running), ms(h.Start), ms(h.End))
		}
		_ = tw.Flush()
		fmt.Fprintf(out, "  critical path: %s\n", strings.Join(res.Hooks.CriticalPath, " → "))
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
	fmt.Fprintf(out, "\nOK: %d voting etcd members, node agent sees %v, %d hooks succeeded\n", res.Voters, res.Addresses, len(res.Hooks.Hooks))
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }
