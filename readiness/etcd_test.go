package readiness_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubeboot/kubeboot/internal/testenv"
	"github.com/kubeboot/kubeboot/readiness"
)

func TestEtcdHealthyLosesQuorum(t *testing.T) {
	testenv.AwaitNoLeaks(t)
	c := testenv.NewCluster(t, testenv.WithMembers(3))
	ctx := testCtx(t)
	check := readiness.EtcdHealthy(c.Client(), readiness.WithMemberQuorum())
	attempt := readiness.WithAttemptTimeout(2 * time.Second)

	require.NoError(t, readiness.Wait(ctx, check, attempt))

	// Stop two of three members: the survivor has no quorum.
	stopped := []*testenv.Member{c.Member(1), c.Member(2)}
	var labels []string
	for _, m := range stopped {
		labels = append(labels, fmt.Sprintf("%s (%x)", m.Name, m.ID()))
	}
	for _, m := range stopped {
		require.NoError(t, m.Stop())
	}

	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := readiness.Wait(short, check, attempt)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	t.Logf("without quorum: %v", err)
	var ee *readiness.EtcdError
	require.ErrorAs(t, err, &ee, "the last reason is an *EtcdError: %v", err)
	require.Len(t, ee.Unreachable, 2, "%v", err)
	for i, label := range labels {
		want := label + " at " + stopped[i].ClientURL + ": no answer"
		assert.True(t, slices.ContainsFunc(ee.Unreachable, func(u string) bool { return strings.HasPrefix(u, want) }),
			"no %q in %q", want, ee.Unreachable)
		assert.Contains(t, err.Error(), label)
	}
	assert.Contains(t, err.Error(), "2 of 3 voting members unreachable")
	assert.Contains(t, err.Error(), `linearizable read of "health" failed`)

	// Without the option the check still fails: no quorum read.
	plain, cancelPlain := context.WithTimeout(ctx, 2*time.Second)
	defer cancelPlain()
	err = readiness.EtcdHealthy(c.Client()).Check(plain)
	require.ErrorAs(t, err, &ee)
	assert.Contains(t, err.Error(), `linearizable read of "health" failed`)

	for _, m := range stopped {
		require.NoError(t, m.Restart(ctx))
	}
	require.NoError(t, readiness.Wait(ctx, check, attempt))
}

func TestEtcdHealthyAlarm(t *testing.T) {
	testenv.AwaitNoLeaks(t)
	c := testenv.NewCluster(t)
	ctx := testCtx(t)
	cli := c.Client()
	check := readiness.EtcdHealthy(cli)
	require.NoError(t, readiness.Wait(ctx, check))

	id := c.Member(0).ID()
	_, err := pb.NewMaintenanceClient(cli.ActiveConnection()).Alarm(ctx, &pb.AlarmRequest{
		Action: pb.AlarmRequest_ACTIVATE, MemberID: id, Alarm: pb.AlarmType_NOSPACE,
	})
	require.NoError(t, err)

	err = check.Check(ctx)
	var ee *readiness.EtcdError
	require.ErrorAs(t, err, &ee)
	want := fmt.Sprintf("NOSPACE on member %s (%x)", c.Member(0).Name, id)
	assert.Equal(t, []string{want}, ee.Alarms)
	assert.Contains(t, err.Error(), "active alarm(s): "+want)
	t.Logf("with the alarm: %v", err)

	// Wait says so too when it is stopped: once an attempt has reported
	// the alarm, cancel it.
	waitCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	opt, attempts := observer()
	done := goWait(waitCtx, readiness.EtcdHealthy(cli, readiness.WithMemberQuorum()), opt, tenMinutes)
	awaitAttempt(t, attempts, done, "the alarm is reported", failsWith("active alarm(s): "+want))
	cancel()
	err = awaitDone(t, done, "after cancel")
	require.ErrorIs(t, err, context.Canceled)
	var nr *readiness.NotReadyError
	require.ErrorAs(t, err, &nr)
	require.ErrorAs(t, nr.Last, &ee, "the last reason is the *EtcdError")
	assert.Equal(t, []string{want}, ee.Alarms)
	assert.Contains(t, err.Error(), want)

	_, err = cli.AlarmDisarm(ctx, &clientv3.AlarmMember{MemberID: id, Alarm: pb.AlarmType_NOSPACE})
	require.NoError(t, err)
	require.NoError(t, readiness.Wait(ctx, check))
}

func TestEtcdHealthyBadInput(t *testing.T) {
	ctx := testCtx(t)
	require.ErrorIs(t, readiness.Wait(ctx, readiness.EtcdHealthy(nil)), readiness.ErrInvalid)
	// A client that is never dialled: bad options fail before any RPC.
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:1"}})
	require.NoError(t, err)
	require.ErrorIs(t, readiness.Wait(ctx, readiness.EtcdHealthy(cli, readiness.WithHealthKey(""))), readiness.ErrInvalid)
	require.ErrorIs(t, readiness.Wait(ctx, readiness.EtcdHealthy(cli, nil)), readiness.ErrInvalid)
	require.NoError(t, cli.Close())
	err = readiness.Wait(ctx, readiness.EtcdHealthy(cli))
	require.ErrorIs(t, err, readiness.ErrInvalid)
	assert.Contains(t, err.Error(), "EtcdHealthy: the *clientv3.Client is closed")
}

func TestEtcdHealthyAccessDenied(t *testing.T) {
	testenv.AwaitNoLeaks(t)
	c := testenv.NewCluster(t)
	ctx := testCtx(t)

	// Enable etcd authentication with a root user and a user with no
	// role at all.
	admin := c.Client()
	_, err := admin.RoleAdd(ctx, "root")
	require.NoError(t, err)
	for _, u := range []string{"root", "gate"} {
		_, err = admin.UserAdd(ctx, u, u+"-password")
		require.NoError(t, err)
	}
	_, err = admin.UserGrantRole(ctx, "root", "root")
	require.NoError(t, err)
	_, err = admin.AuthEnable(ctx)
	require.NoError(t, err)
	// One client per user: each login costs a bcrypt hash.
	login := func(user string) *clientv3.Client {
		cli, err := c.NewClientConfig(clientv3.Config{Username: user, Password: user + "-password"})
		require.NoError(t, err)
		return cli
	}
	gate, root := login("gate"), login("root")

	// On etcd v3.6 Status needs the root role: the failure says so, for
	// errors.Is too. etcd v3.7 (authMaintenanceServer.Status checks only
	// that the caller is authenticated) answers any user, and the check
	// passes for both.
	statusNeedsRoot := strings.HasPrefix(c.Member(0).Version(), "v3.6")
	for name, opts := range map[string][]readiness.EtcdOption{
		"endpoints":     nil,
		"member quorum": {readiness.WithMemberQuorum()},
	} {
		t.Run(name, func(t *testing.T) {
			err := readiness.EtcdHealthy(gate, opts...).Check(ctx)
			if !statusNeedsRoot {
				require.NoError(t, err, "etcd %s lets any authenticated user ask for Status", c.Member(0).Version())
				require.NoError(t, readiness.EtcdHealthy(root, opts...).Check(ctx))
				return
			}
			var ee *readiness.EtcdError
			require.ErrorAs(t, err, &ee)
			assert.ErrorIs(t, err, readiness.ErrAccessDenied)
			assert.ErrorIs(t, err, rpctypes.ErrPermissionDenied)
			assert.Contains(t, err.Error(), "access denied")
			t.Logf("without the root role: %v", err)

			require.NoError(t, readiness.EtcdHealthy(root, opts...).Check(ctx))
		})
	}
}

// Without WithMemberQuorum too, a cluster that lost quorum is reported
// with its dead members named, with their URLs; and the check says so as
// soon as it is certain (nothing listens at two of three members' URLs),
// not at the end of its context: the context here has no deadline but the
// test's guard.
func TestEtcdHealthyNamesDeadMembers(t *testing.T) {
	testenv.AwaitNoLeaks(t)
	c := testenv.NewCluster(t, testenv.WithMembers(3))
	ctx := testCtx(t)
	// A client of the survivor only: the dead members are found through
	// the member list, not the client's endpoints.
	for name, endpoints := range map[string][]string{
		"all endpoints":     nil,
		"survivor endpoint": {c.Member(0).Endpoint()},
	} {
		t.Run(name, func(t *testing.T) {
			cli, err := c.NewClient(endpoints...)
			require.NoError(t, err)
			defer func() { _ = cli.Close() }()
			require.NoError(t, readiness.EtcdHealthy(cli).Check(ctx))
		})
	}

	stopped := []*testenv.Member{c.Member(1), c.Member(2)}
	var wants []string
	for _, m := range stopped {
		wants = append(wants, fmt.Sprintf("%s (%x) at %s: no answer", m.Name, m.ID(), m.ClientURL))
	}
	for _, m := range stopped {
		require.NoError(t, m.Stop())
	}
	for name, endpoints := range map[string][]string{
		"all endpoints":     nil,
		"survivor endpoint": {c.Member(0).Endpoint()},
	} {
		t.Run(name, func(t *testing.T) {
			cli, err := c.NewClient(endpoints...)
			require.NoError(t, err)
			defer func() { _ = cli.Close() }()
			err = readiness.EtcdHealthy(cli).Check(ctx)
			t.Logf("2 of 3 down, no WithMemberQuorum: %v", err)
			var ee *readiness.EtcdError
			require.ErrorAs(t, err, &ee)
			require.Len(t, ee.Unreachable, 2, "%v", err)
			for _, want := range wants {
				assert.True(t, slices.ContainsFunc(ee.Unreachable, func(u string) bool { return strings.HasPrefix(u, want) }),
					"no %q in %q", want, ee.Unreachable)
				assert.Contains(t, err.Error(), want)
			}
			assert.Contains(t, err.Error(), "2 of 3 voting members unreachable, quorum needs 2 to answer")
			assert.Contains(t, err.Error(), `linearizable read of "health" failed`)
		})
	}
	for _, m := range stopped {
		require.NoError(t, m.Restart(ctx))
	}
}

// With one member of three down, the check passes as soon as the read,
// the alarm list and a leader (with WithMemberQuorum, a quorum of
// answers) are in: it does not wait for the dead member. The attempt
// timeout is an hour, so a check that waited for the dead member would
// hold Wait to the test's guard.
func TestEtcdHealthyOneDownAnswersEarly(t *testing.T) {
	testenv.AwaitNoLeaks(t)
	c := testenv.NewCluster(t, testenv.WithMembers(3))
	ctx := testCtx(t)
	cli := c.Client() // all three endpoints
	require.NoError(t, readiness.EtcdHealthy(cli).Check(ctx))

	require.NoError(t, c.Member(1).Stop())
	long := readiness.WithAttemptTimeout(time.Hour)
	for name, opts := range map[string][]readiness.EtcdOption{
		"endpoints":     nil,
		"member quorum": {readiness.WithMemberQuorum()},
	} {
		t.Run(name, func(t *testing.T) {
			opt, attempts := observer()
			done := goWait(ctx, readiness.EtcdHealthy(cli, opts...), opt, long, readiness.WithStability(3, 0))
			require.NoError(t, awaitDone(t, done, "one of three down"))
			for range 3 {
				a := <-attempts
				assert.NoError(t, a.Err)
			}
		})
	}
	require.NoError(t, c.Member(1).Restart(ctx))
}
