package testenv

import (
	"bytes"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"
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

// awaitPeerConnsClosed waits, at most d, until no goroutine is stuck in
// net/http's abortPendingRead. A stopped embedded etcd can leave a peer
// (rafthttp) connection whose server side waits there until the
// connection's 5 s read deadline passes; the goroutines end by themselves,
// but later than goleak looks. Waiting here keeps goleak strict.
func awaitPeerConnsClosed(d time.Duration) {
	deadline := time.Now().Add(d)
	buf := make([]byte, 1<<20)
	for time.Now().Before(deadline) {
		n := runtime.Stack(buf, true)
		if n == len(buf) {
			buf = make([]byte, 2*len(buf))
			continue
		}
		if !bytes.Contains(buf[:n], []byte("net/http.(*connReader).abortPendingRead")) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// SyncBuffer is a bytes.Buffer that a program under test and the test can
// use from different goroutines.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
