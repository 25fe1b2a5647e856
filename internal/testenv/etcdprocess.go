package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/version"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// EtcdVersion is the etcd server version the harness runs as processes
// (WithEtcdVersion, WithMemberVersion, KUBEBOOT_ETCD_VERSION), pinned by the
// tools module internal/testenv/etcdbuild and built from the module proxy
// like the Kubernetes binaries.
const EtcdVersion = "v3.7.3"

// Environment variables for etcd.
const (
	// EnvEtcd names a prebuilt etcd server binary of EtcdVersion to use
	// instead of building one.
	EnvEtcd = "KUBEBOOT_ETCD"
	// EnvEtcdVersion makes every cluster that no WithEtcdVersion option
	// configures run its members as processes of that etcd version
	// (EtcdVersion, e.g. "v3.7.3", "3.7.3" or "3.7"); unset, "embedded" or
	// the embedded server's version keep them in process.
	EnvEtcdVersion = "KUBEBOOT_ETCD_VERSION"
)

// EmbeddedEtcdVersion returns the version of the embedded etcd server (the
// go.etcd.io/etcd/server/v3 the test module requires), e.g. "v3.6.0".
func EmbeddedEtcdVersion() string { return "v" + version.Version }

// EtcdVersions returns the etcd server versions the harness can run: the
// embedded one first, then EtcdVersion.
func EtcdVersions() []string { return []string{EmbeddedEtcdVersion(), EtcdVersion} }

// EtcdBinary returns the path of an etcd server binary of EtcdVersion: the
// one named by KUBEBOOT_ETCD, or one built from the module proxy into the
// user cache directory (about a minute cold on two cores, once). It blocks
// for the build; concurrent builders in other processes wait on a file lock;
// cancelling ctx ends the wait or the build with ctx's error. logf, if not
// nil, is told when a build starts and ends.
func EtcdBinary(ctx context.Context, logf func(format string, args ...any)) (string, error) {
	return etcdServer.binary(ctx, logf)
}

// resolveEtcdVersion maps a requested etcd version to "" (the embedded
// server) or EtcdVersion (a process). Accepted: "" and "embedded", the
// embedded version or its minor, EtcdVersion or its minor, with or without
// the leading "v".
func resolveEtcdVersion(v string) (string, error) {
	want := "v" + strings.TrimPrefix(strings.TrimSpace(v), "v")
	switch {
	case v == "" || v == "embedded":
		return "", nil
	case want == EmbeddedEtcdVersion() || want == minorOf(EmbeddedEtcdVersion()):
		return "", nil
	case want == EtcdVersion || want == minorOf(EtcdVersion):
		return EtcdVersion, nil
	}
	return "", fmt.Errorf("testenv: unsupported etcd version %q (supported: %s embedded, %s as a process)", v, EmbeddedEtcdVersion(), EtcdVersion)
}

// selectedEtcdVersion is the version KUBEBOOT_ETCD_VERSION asks for ("" for
// embedded).
func selectedEtcdVersion() (string, error) {
	v := os.Getenv(EnvEtcdVersion)
	got, err := resolveEtcdVersion(v)
	if err != nil {
		return "", fmt.Errorf("%s=%s: %w", EnvEtcdVersion, v, err)
	}
	return got, nil
}

// SelectedEtcdVersion returns the etcd version new clusters run by default:
// EtcdVersion when KUBEBOOT_ETCD_VERSION selects it, else
// EmbeddedEtcdVersion. An unsupported value is an error.
func SelectedEtcdVersion() (string, error) {
	v, err := selectedEtcdVersion()
	if err != nil || v != "" {
		return v, err
	}
	return EmbeddedEtcdVersion(), nil
}

// MemberOption configures one member started by Cluster.StartMember.
type MemberOption func(*memberConfig)

type memberConfig struct {
	version    string
	versionSet bool
}

// WithMemberVersion runs the joining member at etcd version v instead of
// the cluster's: EtcdVersion starts it as a process (a v3.7 member joining
// an embedded v3.6 cluster, as in a rolling upgrade), "embedded" or the
// embedded version starts it in process. An unsupported version makes
// StartMember fail.
func WithMemberVersion(v string) MemberOption {
	return func(c *memberConfig) { c.version, c.versionSet = v, true }
}

// isProcess reports whether the member runs as an etcd process.
func (m *Member) isProcess() bool { return m.version != "" }

// Version returns the member's etcd server version: EtcdVersion for a
// process member, EmbeddedEtcdVersion for an embedded one.
func (m *Member) Version() string {
	if m.isProcess() {
		return m.version
	}
	return EmbeddedEtcdVersion()
}

// processArgs is the member's configuration as etcd flags, the same
// settings config gives an embedded member.
func (m *Member) processArgs() []string {
	c := m.cluster
	args := []string{
		"--name=" + m.Name,
		"--data-dir=" + m.Dir,
		"--listen-client-urls=" + m.ClientURL,
		"--advertise-client-urls=" + m.ClientURL,
		"--listen-peer-urls=" + m.PeerURL,
		"--initial-advertise-peer-urls=" + m.PeerURL,
		"--initial-cluster=" + m.initialCluster,
		"--initial-cluster-token=" + c.token,
		"--initial-cluster-state=" + m.state,
		"--unsafe-no-fsync=true",
		"--strict-reconfig-check=" + strconv.FormatBool(!c.cfg.laxReconfig),
		"--heartbeat-interval=50",
		"--election-timeout=500",
		"--logger=zap",
		"--log-level=info",
		"--log-outputs=stderr", // the process's stderr is the member's log file
	}
	if c.cfg.quotaBytes > 0 {
		args = append(args, "--quota-backend-bytes="+strconv.FormatInt(c.cfg.quotaBytes, 10))
	}
	if c.cfg.maxLearners > 0 {
		args = append(args, "--max-learners="+strconv.Itoa(c.cfg.maxLearners))
	}
	if c.cfg.snapshotCnt > 0 {
		n := strconv.FormatUint(c.cfg.snapshotCnt, 10)
		args = append(args, "--snapshot-count="+n, "--snapshot-catchup-entries="+n)
	}
	if c.cfg.mutualTLS {
		args = append(args,
			"--cert-file="+c.server.CertFile, "--key-file="+c.server.KeyFile,
			"--trusted-ca-file="+c.ca.CertFile, "--client-cert-auth=true",
			"--peer-cert-file="+c.server.CertFile, "--peer-key-file="+c.server.KeyFile,
			"--peer-trusted-ca-file="+c.ca.CertFile, "--peer-client-cert-auth=true")
	}
	return args
}

// launchProcess starts the member's etcd process without waiting for it to
// be ready. The caller holds m.mu.
func (m *Member) launchProcess() error {
	if m.proc != nil && m.proc.running() {
		return fmt.Errorf("testenv: etcd member %s already running", m.Name)
	}
	if err := os.MkdirAll(filepath.Dir(m.Dir), 0o700); err != nil {
		return err
	}
	p := &process{name: "etcd " + m.version + " member " + m.Name, bin: m.bin, logFile: m.LogFile}
	exited, err := p.start(m.processArgs())
	if err != nil {
		return err
	}
	m.proc, m.exited = p, exited
	return nil
}

// waitProcessReady waits until the member's process answers a Status call
// on its client URL: etcd serves clients only once the member has joined
// the cluster and published itself (the point the embedded server's
// ReadyNotify marks). There is no event to wait on in another process, so
// it polls, at FastBackoff's pace with one-second attempts.
func (m *Member) waitProcessReady(ctx context.Context) error {
	m.mu.Lock()
	exited := m.exited
	m.mu.Unlock()
	if exited == nil {
		return fmt.Errorf("testenv: etcd member %s is not running", m.Name)
	}
	cl, err := m.processClient()
	if err != nil {
		return err
	}
	b := FastBackoff()
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := cl.Status(actx, m.ClientURL)
		cancel()
		if err == nil {
			m.mu.Lock()
			m.id = st.Header.MemberId
			m.mu.Unlock()
			return nil
		}
		select {
		case <-exited:
			tail := tailFile(m.LogFile, 20)
			err := fmt.Errorf("testenv: etcd member %s (etcd %s process) exited before it was ready; log tail:\n%s", m.Name, m.version, tail)
			if strings.Contains(tail, "address already in use") {
				err = fmt.Errorf("%w: %w", err, syscall.EADDRINUSE)
			}
			return err
		case <-ctx.Done():
			return fmt.Errorf("testenv: waiting for etcd member %s (etcd %s process) to be ready: %w (last: %v)", m.Name, m.version, context.Cause(ctx), err)
		case <-time.After(b.NextBackOff()):
		}
	}
}

// processClient returns the member's own client (its URL only), made once
// and closed by stopProcess.
func (m *Member) processClient() (*clientv3.Client, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pclient != nil {
		return m.pclient, nil
	}
	cl, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{m.ClientURL},
		TLS:         m.cluster.ClientTLS(),
		Logger:      zap.NewNop(),
		DialTimeout: 5 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("testenv: etcd client for member %s: %w", m.Name, err)
	}
	m.pclient = cl
	return cl, nil
}

// processIsLeader asks the member's process whether it leads (a Status call
// bounded by two seconds; no answer counts as not leading).
func (m *Member) processIsLeader() bool {
	cl, err := m.processClient()
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := cl.Status(ctx, m.ClientURL)
	return err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId
}

// stopProcess signals the member's process (SIGTERM: etcd hands over
// leadership and stops cleanly; SIGKILL: a crash), waits for it to exit
// (SIGKILL after 15 s) and closes its client. A member that is not running
// is left alone.
func (m *Member) stopProcess(sig syscall.Signal) error {
	m.mu.Lock()
	p, cl := m.proc, m.pclient
	m.pclient = nil
	m.mu.Unlock()
	if cl != nil {
		_ = cl.Close()
	}
	if p == nil {
		return nil
	}
	if err := p.stop(sig, 15*time.Second); err != nil {
		return fmt.Errorf("testenv: stop etcd member %s: %w", m.Name, err)
	}
	return nil
}
