package child

import (
	"os"
	"testing"
)

// Memory reads this process's own resident set and peak; the peak is
// never below the resident set, also right after ResetPeak.
func TestMemory(t *testing.T) {
	rss, peak, err := Memory(os.Getpid())
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	if rss <= 0 || peak < rss {
		t.Fatalf("rss %d KiB, peak %d KiB", rss, peak)
	}
	if err := ResetPeak(os.Getpid()); err != nil {
		t.Skipf("clear_refs not writable: %v", err)
	}
	if rss, peak, err = Memory(os.Getpid()); err != nil || peak < rss || rss <= 0 {
		t.Fatalf("after ResetPeak: rss %d KiB, peak %d KiB, %v", rss, peak, err)
	}
}
