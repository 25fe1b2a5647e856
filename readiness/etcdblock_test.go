package readiness_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/kubeboot/kubeboot/internal/testenv"
	"github.com/kubeboot/kubeboot/readiness"
)

// deadURL returns an http URL on loopback where nothing listens.
func deadURL(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return "http://" + addr
}

// checkResult runs check.Check(ctx) and returns its result, failing the
// test if it has not returned by the guard; then it closes cli, which
// ends a c.Dial blocked on the client's own context, so the test can end.
func checkResult(t *testing.T, ctx context.Context, check readiness.Check, cli *clientv3.Client) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- check.Check(ctx) }()
	timer := time.NewTimer(guard)
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
		_ = cli.Close()
		<-done
		t.Fatalf("EtcdHealthy's Check did not return within the guard of %s", guard)
		return nil
	}
}

// kubeadm's etcd client dials with grpc.WithBlock: c.Dial then blocks
// until the connection is ready, bounded by the client's DialTimeout (here
// ten minutes) or Close, never by the check's context. A dead endpoint
// among the client's must not hold the check: healthy is answered as soon
// as it is known, and a check that cannot pass returns when its context
// ends. The dial left blocked is not started again by later checks, which
// find out with a plain connection that nothing listens there.
func TestEtcdHealthyWithBlockingDial(t *testing.T) {
	testenv.AwaitNoLeaks(t)
	c := testenv.NewCluster(t)
	ctx := testCtx(t)
	dead := deadURL(t)
	cli, err := c.NewClientConfig(clientv3.Config{
		Endpoints:   []string{c.Member(0).ClientURL, dead},
		DialTimeout: 10 * time.Minute,
		//lint:ignore SA1019 kubeadm's etcd client dials with grpc.WithBlock: that is what this test is about
		DialOptions: []grpc.DialOption{grpc.WithBlock()},
	})
	require.NoError(t, err)
	defer func() { _ = cli.Close() }() // ends the dials left blocked
	check := readiness.EtcdHealthy(cli)

	t.Run("healthy", func(t *testing.T) {
		for range 3 { // the first check leaves a dial to dead blocked; the next ones must not wait for it either
			require.NoError(t, checkResult(t, ctx, check, cli))
		}
		// Under Wait, with stability.
		done := goWait(ctx, check, readiness.WithStability(3, 0))
		require.NoError(t, awaitDone(t, done, "EtcdHealthy with a blocking dial to a dead endpoint"))
	})

	t.Run("not healthy", func(t *testing.T) {
		// An alarm: the check cannot pass, so it waits for every probe
		// — the Status of the dead endpoint too — until its context ends.
		id := c.Member(0).ID()
		_, err := pb.NewMaintenanceClient(cli.ActiveConnection()).Alarm(ctx, &pb.AlarmRequest{
			Action: pb.AlarmRequest_ACTIVATE, MemberID: id, Alarm: pb.AlarmType_NOSPACE,
		})
		require.NoError(t, err)
		defer func() {
			_, err := cli.AlarmDisarm(ctx, &clientv3.AlarmMember{MemberID: id, Alarm: pb.AlarmType_NOSPACE})
			require.NoError(t, err)
		}()

		// A fresh check: its first round dials the dead endpoint.
		fresh := readiness.EtcdHealthy(cli)
		short, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		err = checkResult(t, short, fresh, cli)
		var ee *readiness.EtcdError
		require.ErrorAs(t, err, &ee, "%v", err)
		assert.Len(t, ee.Alarms, 1, "%v", err)

		// Under Wait: cancelled once an attempt reported the alarm, Wait
		// returns promptly with the reason.
		waitCtx, cancelWait := context.WithCancel(ctx)
		defer cancelWait()
		opt, attempts := observer()
		done := goWait(waitCtx, fresh, opt, readiness.WithAttemptTimeout(time.Minute))
		awaitAttempt(t, attempts, done, "the alarm is reported", failsWith("active alarm(s): NOSPACE"))
		cancelWait()
		err = awaitDone(t, done, "Wait cancelled with a dial to a dead endpoint blocked")
		require.ErrorIs(t, err, context.Canceled)
		var nr *readiness.NotReadyError
		require.ErrorAs(t, err, &nr)
		require.ErrorAs(t, nr.Last, &ee)
		assert.Len(t, ee.Alarms, 1)
	})
}

// A client endpoint that can never be dialled (its port is out of range)
// among good ones is one that does not answer, not bad input: the check
// passes on the others. (A client with only such endpoints is bad input:
// TestClientSideErrorsArePermanent.)
func TestEtcdHealthyOneEndpointNeverDialable(t *testing.T) {
	testenv.AwaitNoLeaks(t)
	c := testenv.NewCluster(t)
	ctx := testCtx(t)
	cli, err := c.NewClient(c.Member(0).ClientURL, "http://127.0.0.1:99999")
	require.NoError(t, err)
	require.NoError(t, readiness.Wait(ctx, readiness.EtcdHealthy(cli, readiness.WithMemberQuorum())))
}
