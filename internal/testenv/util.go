package testenv

import (
	"bytes"
	"os"
	"strings"
)

// Verbose reports whether KUBEBOOT_TEST_VERBOSE=1 asks for server logs on
// stderr instead of log files.
func Verbose() bool { return os.Getenv("KUBEBOOT_TEST_VERBOSE") == "1" }

// tailFile returns the last n lines of a file, or a note saying why not.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")\n"
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	var sb strings.Builder
	for _, l := range lines {
		sb.Write(l)
		sb.WriteByte('\n')
	}
	return sb.String()
}
