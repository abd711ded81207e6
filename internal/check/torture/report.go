package torture

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// WriteJSON writes the report as one JSON object (the --json output):
// {"ops": N, "violations": V, "by_kind": {...}, "seed": S, ...}.
func (r Report) WriteJSON(w io.Writer) error {
	if r.ByKind == nil {
		r.ByKind = map[string]int64{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report for people: a verdict line, the counts, and
// the first violation messages.
func (r Report) WriteText(w io.Writer) error {
	var b strings.Builder
	verdict := "PASS"
	if r.Violations > 0 {
		verdict = "FAIL"
	}
	fmt.Fprintf(&b, "torture %s: %d ops in %.1fs (%.0f ops/s), %d violations, seed %d\n",
		verdict, r.Ops, r.Seconds, r.OpsPerSec, r.Violations, r.Seed)
	fmt.Fprintf(&b, "  %d workers, %d modules, %d instances, %d host taints\n", r.Workers, r.Modules, r.Instances, r.HostTaints)
	fmt.Fprintf(&b, "  %d instances checked during the run, %d at the end; at most %d held at once\n", r.Checked, r.RetainedEnd, r.RetainedPeak)
	fmt.Fprintf(&b, "  live heap: %s at start, %s at end, %s peak; %d mounts at end, %d peak\n",
		mib(r.HeapStart), mib(r.HeapEnd), mib(r.HeapPeak), r.MountsEnd, r.MountsPeak)
	section := func(title string, m map[string]int64) {
		if len(m) == 0 {
			return
		}
		fmt.Fprintf(&b, "%s:\n", title)
		for _, k := range sortedKeys(m) {
			fmt.Fprintf(&b, "  %-28s %d\n", k, m[k])
		}
	}
	section("violations", r.ByKind)
	section("operations", r.OpCounts)
	section("outcomes", r.Outcomes)
	section("module events", r.Events)
	for _, d := range r.Details {
		fmt.Fprintf(&b, "%s\n", d)
	}
	if r.Violations > 0 {
		fmt.Fprintf(&b, "reproduce with: raceless torture --seed %d\n", r.Seed)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func mib(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
