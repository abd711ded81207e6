// Command mutate checks that the fast-path tests catch the mistakes they
// exist to catch. It copies the module (without .git) to a temporary
// directory, so that the working tree, and anyone editing it, is never
// touched; checks that the unmutated copy passes; then, for each mutation in
// the list below, applies it to the copy (a textual edit that must match
// exactly once, so a mutation that no longer applies is reported instead of
// silently testing nothing), runs the relevant packages' tests in each of
// the mutation's modes (plain and/or -race), restores the file, and
// reports which tests failed. A mutation is caught in a mode when the test
// run fails with at least one failing test (not a build failure); it exits
// 1 if any mutation is missed or invalid.
//
// Usage, from the module root:
//
//	go run ./internal/check/mutate [-run REGEXP] [-v] [-keep]
//
// The result table is recorded in docs/fastpaths.md ("Mutation testing").
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
)

// An edit replaces Old, which must occur exactly once in the file, by New.
type edit struct{ Old, New string }

type mutation struct {
	Name  string
	What  string // one line: the mistake
	File  string // relative to the module root
	Edits []edit
	Pkgs  []string // test packages, relative ("./internal/primitives/grace")
	Modes []string // "" (plain go test) and/or "race"
	// NoRace says why the mutation is not run under -race, if it is not.
	NoRace string
}

var (
	fastPkgs  = []string{"./internal/primitives/percpu", "./internal/primitives/grace", "./internal/primitives/ref"}
	gracePkgs = []string{"./internal/primitives/grace"}
	refPkgs   = []string{"./internal/primitives/ref"}
	rootPkgs  = []string{"."}
	both      = []string{"", "race"}
)

// mutations is the list recorded in docs/fastpaths.md.
var mutations = []mutation{
	{
		Name:  "percpu-no-membarrier",
		What:  "percpu.Heavy's membarrier system call removed (Heavy does nothing in the light mode)",
		File:  "internal/primitives/percpu/membarrier_linux.go",
		Edits: []edit{{"_, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, membarrierCmdPrivateExpedited, 0, 0)", "var errno unix.Errno // MUTATION: no membarrier"}},
		Pkgs:  fastPkgs,
		Modes: []string{""},
		// Under -race (and raceless_portable) Light is false and Heavy is a
		// no-op by design: only the light mode can tell.
		NoRace: "Heavy is a no-op under -race by design",
	},
	{
		Name:  "grace-no-phase-recheck",
		What:  "anonymous Lock does not re-check the phase after its add (a stale reader stays in the old phase)",
		File:  "internal/primitives/grace/grace.go",
		Edits: []edit{{"if d.idx.Load()%phases != i {\n\t\treturn d.relock(k, i)", "if false { // MUTATION: no re-check\n\t\treturn d.relock(k, i)"}},
		Pkgs:  gracePkgs,
		Modes: both,
	},
	{
		Name:  "grace-relock-no-undo",
		What:  "relock enters the new phase without undoing its add to the old one",
		File:  "internal/primitives/grace/grace.go",
		Edits: []edit{{"\t\tatomic.AddUint64(&c.n[unlockBase+i], 1)\n", "\t\t// MUTATION: no undo\n"}},
		Pkgs:  gracePkgs,
		Modes: both,
	},
	{
		Name:  "grace-wait-no-heavy",
		What:  "Synchronize's wait scans without calling percpu.Heavy after publishing its wake-up request",
		File:  "internal/primitives/grace/grace.go",
		Edits: []edit{{"\theavy()\n\tif testHookWaiting", "\t// MUTATION: no heavy()\n\tif testHookWaiting"}},
		Pkgs:  gracePkgs,
		Modes: both,
	},
	{
		Name:  "grace-skip-old-phase",
		What:  "Synchronize flips the phase but does not wait for the old one",
		File:  "internal/primitives/grace/grace.go",
		Edits: []edit{{"old := d.undrained | 1<<(cur%phases)", "old := d.undrained // MUTATION: old phase not waited for"}},
		Pkgs:  gracePkgs,
		Modes: both,
	},
	{
		Name:  "grace-cancel-forgets-phase",
		What:  "a cancelled Synchronize does not mark its old phase undrained",
		File:  "internal/primitives/grace/grace.go",
		Edits: []edit{{"\t\td.undrained = old\n\t\treturn err", "\t\treturn err // MUTATION: undrained not recorded"}},
		Pkgs:  gracePkgs,
		Modes: both,
	},
	{
		Name:  "grace-reader-no-wakeup",
		What:  "Reader.Unlock never wakes a waiting grace period",
		File:  "internal/primitives/grace/grace.go",
		Edits: []edit{{"if c < r.d.waitSeq.Load() {", "if c < r.d.waitSeq.Load() && false { // MUTATION"}},
		Pkgs:  gracePkgs,
		Modes: both,
	},
	{
		Name:  "grace-anon-no-wakeup",
		What:  "anonymous Unlock never wakes a waiting grace period",
		File:  "internal/primitives/grace/grace.go",
		Edits: []edit{{"\n\tif d.anonWait.Load()&(1<<i) != 0 {\n\t\td.wakeup()\n\t}\n}", "\n\tif d.anonWait.Load()&(1<<i) != 0 && false { // MUTATION\n\t\td.wakeup()\n\t}\n}"}},
		Pkgs:  gracePkgs,
		Modes: both,
	},
	{
		Name:  "ref-tryget-no-deadbit",
		What:  "Ref.TryGet ignores the dead bit in its add's result",
		File:  "internal/primitives/ref/ref.go",
		Edits: []edit{{"if v&deadBit == 0 {\n\t\treturn true // counted in the slot", "if true { // MUTATION: dead bit ignored\n\t\treturn true // counted in the slot"}},
		Pkgs:  refPkgs,
		Modes: both,
	},
	{
		Name:  "ref-tryget-no-mode",
		What:  "Ref.TryGet does not load the mode first (Kill no longer takes effect at one instant)",
		File:  "internal/primitives/ref/ref.go",
		Edits: []edit{{"\tif r.mode.Load() == modeDead {\n\t\treturn false\n\t}\n\ts := r.slot()\n\tv := s.Add(1)", "\ts := r.slot() // MUTATION: no mode load\n\tv := s.Add(1)"}},
		Pkgs:  refPkgs,
		Modes: both,
	},
	{
		Name:  "ref-kill-no-heavy",
		What:  "Kill scans the Words without calling percpu.Heavy first",
		File:  "internal/primitives/ref/ref.go",
		Edits: []edit{{"\t\theavy() // percpu.Heavy;", "\t\t// MUTATION: no heavy() percpu.Heavy;"}},
		Pkgs:  refPkgs,
		Modes: both,
	},
	{
		Name: "ref-kill-late-mode",
		What: "Kill publishes modeDead only after its slot sweep and Word scan (weakened ordering)",
		File: "internal/primitives/ref/ref.go",
		Edits: []edit{
			{"\tr.mode.Store(modeDead)\n\tvar sum int64", "\tvar sum int64"},
			{"\tfor n < 0 {\n", "\tr.mode.Store(modeDead) // MUTATION: late\n\tfor n < 0 {\n"},
		},
		Pkgs:  refPkgs,
		Modes: both,
	},
	{
		Name:  "registry-install-primary-first",
		What:  "a hot swap installs the new registration before keeping the visible one as secondary (a lookup between the stores finds nothing)",
		File:  "registry.go",
		Edits: []edit{{"\t\ts.secondary.Store(keep)\n\t\tif r.betweenStores != nil {\n\t\t\tr.betweenStores()\n\t\t}\n\t}\n\ts.primary.Store(reg)", "\t\ts.primary.Store(reg) // MUTATION: primary first\n\t\tif r.betweenStores != nil {\n\t\t\tr.betweenStores()\n\t\t}\n\t\ts.secondary.Store(keep)\n\t} else {\n\t\ts.primary.Store(reg)\n\t}"}},
		Pkgs:  rootPkgs,
		Modes: both,
	},
	{
		Name:  "registry-uninstall-clears-secondary",
		What:  "dropping an undone replacement empties the secondary before promoting it",
		File:  "registry.go",
		Edits: []edit{{"\t\t\ts.primary.Store(q)\n\t\t\tif r.betweenStores != nil {", "\t\t\ts.secondary.Store(nil) // MUTATION\n\t\t\tif r.betweenStores != nil {"}},
		Pkgs:  rootPkgs,
		Modes: both,
	},
	{
		Name:  "ref-word-no-mode",
		What:  "Word.TryGet takes the reference without reading the mode",
		File:  "internal/primitives/ref/word.go",
		Edits: []edit{{"if r.mode.Load() == modeDead {\n\t\treturn w.backOut()", "if false { // MUTATION\n\t\treturn w.backOut()"}},
		Pkgs:  refPkgs,
		Modes: both,
	},
}

func main() {
	runRe := flag.String("run", "", "only mutations whose name matches this regexp")
	verbose := flag.Bool("v", false, "print the test output of each run")
	keep := flag.Bool("keep", false, "keep the temporary copy")
	timeout := flag.Duration("timeout", 3*time.Minute, "go test -timeout for each run")
	flag.Parse()
	if err := run(*runRe, *verbose, *keep, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "mutate:", err)
		os.Exit(1)
	}
}

type result struct {
	m      mutation
	mode   string
	caught bool
	tests  []string // failing tests
	note   string
	took   time.Duration
}

func run(runRe string, verbose, keep bool, timeout time.Duration) error {
	re, err := regexp.Compile(runRe)
	if err != nil {
		return err
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "raceless-mutate-")
	if err != nil {
		return err
	}
	if keep {
		fmt.Println("copy:", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	if err := copyTree(root, tmp); err != nil {
		return err
	}

	var todo []mutation
	for _, m := range mutations {
		if re.MatchString(m.Name) {
			todo = append(todo, m)
		}
	}
	if len(todo) == 0 {
		return errors.New("no mutation matches -run")
	}

	// Every mutation must apply to the current code before anything runs.
	for _, m := range todo {
		src, err := os.ReadFile(filepath.Join(tmp, m.File))
		if err != nil {
			return err
		}
		if _, err := apply(src, m.Edits); err != nil {
			return fmt.Errorf("mutation %s no longer applies to %s: %v", m.Name, m.File, err)
		}
	}

	// Baseline: the unmutated copy must pass in every mode used.
	type key struct{ pkgs, mode string }
	base := map[key]bool{}
	for _, m := range todo {
		for _, mode := range m.Modes {
			k := key{strings.Join(m.Pkgs, " "), mode}
			if base[k] {
				continue
			}
			base[k] = true
			start := time.Now()
			out, err := goTest(tmp, m.Pkgs, mode, timeout)
			if verbose {
				os.Stdout.Write(out)
			}
			if err != nil {
				os.Stdout.Write(out)
				return fmt.Errorf("baseline (unmutated) %s%s fails: %v", k.pkgs, modeSuffix(mode), err)
			}
			fmt.Printf("baseline %s%s: ok (%v)\n", k.pkgs, modeSuffix(mode), time.Since(start).Round(time.Second))
		}
	}

	var results []result
	for _, m := range todo {
		path := filepath.Join(tmp, m.File)
		orig, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		mut, _ := apply(orig, m.Edits)
		if err := os.WriteFile(path, mut, 0o644); err != nil {
			return err
		}
		for _, mode := range m.Modes {
			start := time.Now()
			out, err := goTest(tmp, m.Pkgs, mode, timeout)
			r := result{m: m, mode: mode, took: time.Since(start)}
			if verbose {
				os.Stdout.Write(out)
			}
			r.tests = failingTests(out)
			switch {
			case err == nil:
				r.note = "MISSED: every test passed"
			case bytes.Contains(out, []byte("[build failed]")) || bytes.Contains(out, []byte("[setup failed]")):
				r.note = "INVALID: the mutated code does not build"
				os.Stdout.Write(out)
			case len(r.tests) == 0:
				r.note = "INVALID: the run failed without a failing test"
				os.Stdout.Write(out)
			default:
				r.caught = true
			}
			fmt.Printf("%-28s %-5s %-6v %s %s\n", m.Name, modeName(mode), r.took.Round(time.Second), verdict(r), strings.Join(r.tests, ", "))
			results = append(results, r)
		}
		if err := os.WriteFile(path, orig, 0o644); err != nil {
			return err
		}
	}

	// The table for docs/fastpaths.md: one row per mutation, one column
	// per mode.
	fmt.Println()
	fmt.Println("| mutation | mistake | caught by (plain `go test`) | caught by (`-race`) |")
	fmt.Println("| --- | --- | --- | --- |")
	missed := 0
	for _, m := range todo {
		cells := map[string]string{"": "not run", "race": "not run"}
		if m.NoRace != "" {
			cells["race"] = "not run: " + m.NoRace
		}
		for _, r := range results {
			if r.m.Name != m.Name {
				continue
			}
			if !r.caught {
				missed++
				cells[r.mode] = "**" + r.note + "**"
				continue
			}
			cells[r.mode] = "`" + strings.Join(r.tests, "`, `") + "`"
		}
		fmt.Printf("| `%s` | %s | %s | %s |\n", m.Name, m.What, cells[""], cells["race"])
	}
	if missed > 0 {
		return fmt.Errorf("%d of %d mutation runs not caught", missed, len(results))
	}
	fmt.Printf("\nall %d mutation runs caught\n", len(results))
	return nil
}

func verdict(r result) string {
	if r.caught {
		return "caught"
	}
	return r.note
}

func modeName(mode string) string {
	if mode == "" {
		return "plain"
	}
	return mode
}

func modeSuffix(mode string) string {
	if mode == "" {
		return ""
	}
	return " (-" + mode + ")"
}

// apply makes the edits; each Old must occur exactly once.
func apply(src []byte, edits []edit) ([]byte, error) {
	s := string(src)
	for _, e := range edits {
		if n := strings.Count(s, e.Old); n != 1 {
			return nil, fmt.Errorf("%q occurs %d times, want 1", e.Old, n)
		}
		s = strings.Replace(s, e.Old, e.New, 1)
	}
	return []byte(s), nil
}

// goTest runs the packages' tests once in dir, in mode ("" or "race").
func goTest(dir string, pkgs []string, mode string, timeout time.Duration) ([]byte, error) {
	args := []string{"test", "-count=1", "-timeout", timeout.String()}
	if mode != "" {
		args = append(args, "-"+mode)
	}
	args = append(args, pkgs...)
	ctx, cancel := context.WithTimeout(context.Background(), timeout+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	return cmd.CombinedOutput()
}

var failRe = regexp.MustCompile(`(?m)^\s*--- FAIL: (\S+)`)
var timeoutRe = regexp.MustCompile(`(?m)^panic: test timed out`)
var pkgFailRe = regexp.MustCompile(`(?m)^FAIL[ \t]+(\S+)[ \t]`)

// failingTests lists the failing tests (subtests as Parent/Sub, with their
// package's last path element), and test-binary timeouts.
func failingTests(out []byte) []string {
	var tests []string
	// go test prints each package's output before its FAIL line: attribute
	// --- FAIL lines to the next package line.
	pos := 0
	for _, loc := range pkgFailRe.FindAllSubmatchIndex(out, -1) {
		pkg := filepath.Base(string(out[loc[2]:loc[3]]))
		chunk := out[pos:loc[0]]
		for _, m := range failRe.FindAllSubmatch(chunk, -1) {
			tests = append(tests, pkg+"."+string(m[1]))
		}
		if timeoutRe.Match(chunk) {
			tests = append(tests, pkg+" (test binary timed out)")
		}
		pos = loc[1]
	}
	sort.Strings(tests)
	tests = slices.Compact(tests)
	// A failing subtest fails its parent too: name only the subtest.
	var out2 []string
	for i, t := range tests {
		if i+1 < len(tests) && strings.HasPrefix(tests[i+1], t+"/") {
			continue
		}
		out2 = append(out2, t)
	}
	return out2
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a module")
	}
	return filepath.Dir(gomod), nil
}

// copyTree copies the module at src into dst, without .git and without
// files git would ignore at the top level that can be large (built
// binaries).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if d.IsDir() && (rel == ".git" || rel == "bin") {
			return filepath.SkipDir
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type().IsRegular():
			if strings.HasSuffix(rel, ".test") {
				return nil
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			return os.WriteFile(target, data, info.Mode().Perm())
		default:
			return nil // links and special files: not part of the module's sources
		}
	})
}
