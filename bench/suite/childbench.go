package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/etcdproxy/etcdproxy/bench/internal/child"
)

// The reads, lease and failover sections each run another bench of bench/
// as a child, once for every target (cachereads, leasekeepalive,
// failover): given the suite's -etcd, -etcdproxy and -etcdproxy-flags, a
// subdirectory of -dir, the suite's targets under the bench's names for
// them, the section's -<section>-flags, and -json, with which the bench
// prints its results as one line of JSON after its Markdown table.

// childSection is such a section. Its flags are -<bench> (the binary)
// and -<name>-flags (passed through; quick is their -quick preset, example
// shows a use); it runs once (run), and about describes what ran, or says
// that nothing did (setup nil: none of the targets is the bench's).
type childSection struct {
	name, bench, example, quick string
	bin, extra                  *string
	run                         func(context.Context, options, *results) error
	ran                         func() bool
	about                       func() string
}

func (c childSection) register() {
	register(&section{
		name: c.name,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(c.bin, c.bench, "", fmt.Sprintf("%s binary (bench/%s), for the %s section", c.bench, c.bench, c.name))
			fs.StringVar(c.extra, c.name+"-flags", "", fmt.Sprintf("%s: extra flags for bench/%s (space separated), e.g. %s", c.name, c.bench, c.example))
		},
		quick: map[string]string{c.name + "-flags": c.quick},
		check: func(options) error {
			if *c.bin == "" {
				return fmt.Errorf("needs -%s", c.bench)
			}
			return nil
		},
		once: c.run,
		about: func(options) string {
			if !c.ran() {
				return "not run (none of the targets is one bench/" + c.bench + " measures)"
			}
			return c.about()
		},
	})
}

// childBench is one such run.
type childBench struct {
	section string // the suite's section, and the subdirectory of -dir
	name    string // the bench's name (bench/<name>)
	bin     string
	// targets maps the suite's target names to the bench's; a target the
	// bench does not have is missing.
	targets map[string]string
	flags   string // the section's extra flags for the bench
}

// run runs the bench on the suite's targets it has, and decodes its JSON
// result into v. It returns the bench's target names (in the suite's
// order) mapped back to the suite's, and false if the bench has none of
// the suite's targets (nothing is run).
func (c childBench) run(o options, v any) (suiteName map[string]string, ran bool, err error) {
	var names []string
	suiteName = map[string]string{}
	for _, t := range o.targets {
		if n, ok := c.targets[t]; ok {
			names = append(names, n)
			suiteName[n] = t
		}
	}
	if len(names) == 0 {
		child.Logf("%s: none of the targets %v is one bench/%s measures; skipped", c.section, o.targets, c.name)
		return nil, false, nil
	}
	dir := filepath.Join(o.dir, c.section)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, false, err
	}
	args := []string{"-etcd=" + o.etcdBin, "-dir=" + dir, "-targets=" + strings.Join(names, ",")}
	if o.etcdproxyBin != "" {
		args = append(args, "-etcdproxy="+o.etcdproxyBin)
	}
	if o.etcdproxyFlags != "" {
		args = append(args, "-etcdproxy-flags="+o.etcdproxyFlags)
	}
	args = append(append(args, strings.Fields(c.flags)...), "-json")
	logPath := filepath.Join(o.dir, c.name+".log")
	p, err := child.Start(c.name, c.bin, args, logPath)
	if err != nil {
		return nil, false, err
	}
	began := time.Now()
	p.Wait(o.timeout) // the suite's own -timeout ends it sooner if need be
	p.Stop()          // it has exited: only forgets it
	if err := decodeLastJSON(logPath, v); err != nil {
		return nil, false, fmt.Errorf("bench/%s failed after %v (%v); see %s", c.name, time.Since(began).Round(time.Second), err, logPath)
	}
	child.Logf("%s: bench/%s done in %v; its table and log in %s", c.section, c.name, time.Since(began).Round(time.Second), logPath)
	return suiteName, true, nil
}

// decodeLastJSON decodes the last line of the log that is a JSON object
// into v; without one, the error is the log's last line (the bench's own
// error, as child.Main prints it).
func decodeLastJSON(logPath string, v any) error {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return err
	}
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		if bytes.HasPrefix(lines[i], []byte(`{"`)) {
			return json.Unmarshal(lines[i], v)
		}
	}
	return fmt.Errorf("no JSON result; its last line: %q", lines[len(lines)-1])
}
