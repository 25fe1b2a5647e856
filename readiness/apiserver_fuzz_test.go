package readiness

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzReadyzBody feeds arbitrary bodies to the /readyz?verbose parser and
// to the error built from them. The seeds are real kube-apiserver v1.36.3
// output (testdata/readyz, captured with etcd up and with etcd cut off)
// and edge cases around them. It never panics, and what it extracts is
// bounded and fit for a one-line error message.
func FuzzReadyzBody(f *testing.F) {
	seeds, err := filepath.Glob("testdata/readyz/*.txt")
	if err != nil || len(seeds) == 0 {
		f.Fatalf("no seeds in testdata/readyz: %v", err)
	}
	for _, path := range seeds {
		body, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body)
		f.Add(bytes.ReplaceAll(body, []byte("\n"), []byte("\r\n")))
	}
	f.Add([]byte(""))
	f.Add([]byte("[-]"))
	f.Add([]byte("[-] leading-space failed"))
	f.Add([]byte("  [-]indented failed: reason withheld\n"))
	f.Add([]byte("[-]tab\tfailed"))
	f.Add([]byte("[-]bad\xffutf8 failed"))
	f.Add([]byte("[-]ctl\x01name failed"))
	f.Add([]byte("[-]" + strings.Repeat("x", 300) + " failed"))
	f.Add([]byte(strings.Repeat("y", 70000) + "\n[-]after-a-long-line failed"))
	f.Add([]byte(strings.Repeat("[-]c failed\n", 100)))
	f.Add([]byte("Internal Server Error: \"/readyz\": etcdserver: request timed out\xe2\x80"))
	f.Add([]byte("\xe2\x80\xa6" + strings.Repeat("é", 150)))

	f.Fuzz(func(t *testing.T, body []byte) {
		names := failingChecks(body)
		if len(names) > maxFailingChecks {
			t.Fatalf("%d names, want at most %d", len(names), maxFailingChecks)
		}
		for _, n := range names {
			if n == "" || len(n) > maxCheckNameLen || !utf8.ValidString(n) {
				t.Fatalf("bad name %q", n)
			}
			if strings.ContainsFunc(n, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) {
				t.Fatalf("name %q has a space or an unprintable character", n)
			}
			if !bytes.Contains(body, []byte("[-]"+n)) {
				t.Fatalf("name %q is not in the body after [-]", n)
			}
		}
		if len(names) > bytes.Count(body, []byte("[-]")) {
			t.Fatalf("%d names from %d [-] markers", len(names), bytes.Count(body, []byte("[-]")))
		}

		re := &ReadyzError{StatusCode: 500, Failing: names}
		if len(names) == 0 {
			re.Body = snippet(body, 200)
			if len(re.Body) > 200+len("…") {
				t.Fatalf("snippet of %d bytes", len(re.Body))
			}
		}
		msg := re.Error()
		if !utf8.ValidString(msg) {
			t.Fatalf("error message is not valid UTF-8: %q", msg)
		}
		if strings.ContainsFunc(msg, unicode.IsControl) {
			t.Fatalf("error message has a control character: %q", msg)
		}
	})
}

// The real output parses to what the apiserver said.
func TestReadyzBodyRealOutput(t *testing.T) {
	for file, want := range map[string][]string{
		"v1.36.3-ready.txt":     nil,
		"v1.36.3-etcd-down.txt": {"etcd", "etcd-readiness"},
	} {
		body, err := os.ReadFile(filepath.Join("testdata/readyz", file))
		if err != nil {
			t.Fatal(err)
		}
		got := failingChecks(body)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s: failing %q, want %q", file, got, want)
		}
	}
	// A failing check after a line longer than any scanner buffer is
	// still found.
	long := strings.Repeat("y", 70000) + "\n[-]etcd failed: reason withheld\n"
	if got := failingChecks([]byte(long)); len(got) != 1 || got[0] != "etcd" {
		t.Errorf("after a long line: %q", got)
	}
}
