package linearize

import (
	"fmt"
	"sort"
	"strings"

	"github.com/anishathalye/porcupine"
)

// dump lists a history by invocation time, one operation a line.
func dump(hist []porcupine.Operation) string {
	sort.Slice(hist, func(i, j int) bool { return hist[i].Call < hist[j].Call })
	var b strings.Builder
	for _, o := range hist {
		fmt.Fprintf(&b, "%4d-%4d c%d %s\n", o.Call, o.Return, o.ClientId, Model.DescribeOperation(o.Input, nil))
	}
	return b.String()
}

// dumpIllegal lists only the partitions (names) that are not linearizable.
func dumpIllegal(hist []porcupine.Operation) string {
	var b strings.Builder
	for _, part := range partition(hist) {
		if !porcupine.CheckOperations(Model, part) {
			b.WriteString(dump(part))
		}
	}
	return b.String()
}
