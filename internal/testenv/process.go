package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// process is one child process of a node-side component (controller-manager,
// scheduler, kubelet): its own process group, killed by the kernel if the
// test binary dies, output appended to a log file. Its methods are safe for
// concurrent use.
type process struct {
	name    string
	bin     string
	logFile string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// start starts the process with args. As for the kube-apiserver, one
// goroutine starts and waits for the child with its OS thread locked for
// the child's whole life: the parent-death signal fires when the thread that
// started the child exits, not the process, and Go may retire an idle
// thread otherwise.
func (p *process) start(args []string) (<-chan struct{}, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return nil, fmt.Errorf("testenv: %s already running", p.name)
	}
	log, err := os.OpenFile(p.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "=== testenv: starting %s at %s\n", p.name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, args...)
	if Verbose() {
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	} else {
		cmd.Stdout, cmd.Stderr = log, log
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	exited := make(chan struct{})
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer close(exited)
		defer log.Close()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("testenv: start %s: %w", p.name, err)
	}
	p.cmd, p.exited = cmd, exited
	return exited, nil
}

// stop sends sig to the process group (SIGTERM for a graceful stop, SIGKILL
// for a crash), SIGKILL after grace if it is still there, and waits for the
// process to exit. Stopping a stopped process is a no-op.
func (p *process) stop(sig syscall.Signal, grace time.Duration) error {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.cmd, p.exited = nil, nil
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	if err := syscall.Kill(-cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("testenv: signal %s: %w", p.name, err)
	}
	select {
	case <-exited:
	case <-time.After(grace):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	return nil
}

// running reports whether the process was started and not stopped; one that
// exited by itself still counts until stop is called (see exitedEarly).
func (p *process) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}

// pid returns the process id, or 0 if not running.
func (p *process) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// exitedEarly reports whether a started process has exited by itself.
func (p *process) exitedEarly() bool {
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	if exited == nil {
		return false
	}
	select {
	case <-exited:
		return true
	default:
		return false
	}
}

// logTail returns the last n lines of the process's log.
func (p *process) logTail(n int) string { return tailFile(p.logFile, n) }
