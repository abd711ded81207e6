package modindex

import (
	"fmt"
	"path"
	"testing"
)

// TestAliasIndexFirstMatch: the index answers what a scan of the list in
// order answers (the first glob that matches), exact aliases and globs
// interleaved, duplicates included.
func TestAliasIndexFirstMatch(t *testing.T) {
	list := []Alias{
		{"symbol:add", "a"},
		{"greeting-*", "g"},
		{"symbol:mul", "b"},
		{"symbol:*", "any"},
		{"symbol:add", "late"}, // shadowed by the first
		{"greeting-hi", "h"},   // shadowed by the glob before it
		{"x[", "bad"},          // malformed: never matches
		{"exact", "e"},
	}
	scan := func(s string) (string, bool) {
		for _, a := range list {
			if ok, err := path.Match(a.Glob, s); err == nil && ok {
				return a.Module, true
			}
		}
		return "", false
	}
	ix := newAliasIndex(list)
	for _, s := range []string{"symbol:add", "symbol:mul", "symbol:sub", "greeting-hi", "greeting-", "exact", "x[", "nothing", ""} {
		m, ok := ix.match(s)
		wm, wok := scan(s)
		if m != wm || ok != wok {
			t.Errorf("match(%q) = %q %v, a scan says %q %v", s, m, ok, wm, wok)
		}
	}
}

// BenchmarkAliasMatch: matching an import's alias among 100,000 modules'
// aliases costs a map lookup, not a scan.
func BenchmarkAliasMatch(b *testing.B) {
	var list []Alias
	for i := range 100000 {
		list = append(list, Alias{fmt.Sprintf("symbol:s%d", i), fmt.Sprintf("m%d", i)})
	}
	ix := newAliasIndex(list)
	for i := range b.N {
		if _, ok := ix.match(fmt.Sprintf("symbol:s%d", i%100000)); !ok {
			b.Fatal("no match")
		}
	}
}
