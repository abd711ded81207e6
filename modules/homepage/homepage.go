// Package homepage is the daemon's default route module: it answers
// "GET /{$}" (the root, and only the root) with a small text page naming
// the module serving it and every route served with the module serving
// each. Loaded at boot by `raceless serve` and unloadable like any other
// module (rmmod homepage: / answers 404 from then on).
package homepage

import (
	"fmt"
	"net/http"
	"sort"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/web"
)

// Name is the module's name; Pattern the route it serves.
const (
	Name    = "homepage"
	Pattern = "GET /{$}"
)

// Info is the module's metadata.
var Info = raceless.Info{
	Name:        Name,
	Version:     "1.0.0",
	License:     "Apache-2.0",
	Description: "Default route module: answers / with the routes served and their modules",
	Author:      "The raceless authors",
	Aliases:     []string{"route:/"},
}

// Source returns the module's source for host h (whose routes it lists).
func Source(h *raceless.Host) raceless.Source {
	return raceless.Native(Info, func() raceless.Module { return &module{h: h} })
}

type module struct{ h *raceless.Host }

func (m *module) Init(k *raceless.Kernel) error {
	return web.Register(k, Pattern, http.HandlerFunc(m.serve))
}

func (m *module) Exit() (int, error) { return 0, nil }

func (m *module) serve(w http.ResponseWriter, r *http.Request) {
	regs := m.h.Lookup(raceless.KindRoute)
	sort.Slice(regs, func(i, j int) bool { return regs[i].Name < regs[j].Name })
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "raceless: this page is served by the module %s.\n\nRoutes served, with their modules:\n", Name)
	for _, reg := range regs {
		fmt.Fprintf(w, "  %-24s %s\n", reg.Name, reg.Owner)
	}
	fmt.Fprintln(w, "\nLoad a module that registers a route (raceless.KindRoute) and it appears here; unload it and it is gone.")
}
