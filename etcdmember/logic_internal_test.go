package etcdmember

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestClassify(t *testing.T) {
	live := context.Background()
	for _, tc := range []struct {
		name string
		err  error
		want kind
	}{
		// As the server sends them (gRPC status) and as the client hands
		// them over (rpctypes.EtcdError), and wrapped.
		{"not learner (grpc)", rpctypes.ErrGRPCMemberNotLearner, kindNotLearner},
		{"not learner (client)", rpctypes.ErrMemberNotLearner, kindNotLearner},
		{"not learner (wrapped)", fmt.Errorf("promote: %w", rpctypes.ErrMemberNotLearner), kindNotLearner},
		{"not ready (grpc)", rpctypes.ErrGRPCLearnerNotReady, kindLearnerNotReady},
		{"not ready (client)", rpctypes.ErrMemberLearnerNotReady, kindLearnerNotReady},
		{"not found", rpctypes.ErrGRPCMemberNotFound, kindMemberNotFound},
		{"too many learners", rpctypes.ErrTooManyLearners, kindTooManyLearners},
		{"peer URL exists", rpctypes.ErrGRPCPeerURLExist, kindPeerURLExists},
		{"not enough started (bare string, as etcd sends it)", errors.New(rpctypes.ErrorDesc(rpctypes.ErrGRPCMemberNotEnoughStarted)), kindReconfigRefused},
		{"unhealthy", rpctypes.ErrGRPCUnhealthy, kindReconfigRefused},
		{"permission denied", rpctypes.ErrGRPCPermissionDenied, kindPermanent},
		{"invalid auth token", rpctypes.ErrGRPCInvalidAuthToken, kindPermanent},
		{"bad URLs", rpctypes.ErrGRPCMemberBadURLs, kindPermanent},
		{"cluster ID mismatch", rpctypes.ErrGRPCClusterIDMismatch, kindPermanent},
		{"other invalid argument", status.Error(codes.InvalidArgument, "nope"), kindPermanent},
		{"no leader", rpctypes.ErrGRPCNoLeader, kindTransient},
		{"not leader", rpctypes.ErrGRPCNotLeader, kindTransient},
		{"leader changed", rpctypes.ErrGRPCLeaderChanged, kindTransient},
		{"request timed out", rpctypes.ErrGRPCTimeout, kindTransient},
		{"wait applied index", rpctypes.ErrGRPCTimeoutWaitAppliedIndex, kindTransient},
		{"unavailable", status.Error(codes.Unavailable, "connection reset"), kindTransient},
		{"per-RPC deadline", context.DeadlineExceeded, kindTransient},
		{"grpc deadline", status.Error(codes.DeadlineExceeded, "deadline"), kindTransient},
		{"connection closing", status.Error(codes.Canceled, "grpc: the client connection is closing"), kindTransient},
		{"connection refused (as gRPC reports it)", status.Error(codes.Unavailable, "connection error: desc = \"transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused\""), kindTransient},
		{"learner endpoint (another endpoint may take it)", rpctypes.ErrGRPCNotSupportedForLearner, kindTransient},
		{"wrapped status", fmt.Errorf("list members: %w", status.Error(codes.Unavailable, "x")), kindTransient},
		{"client-side error, nothing sent", errors.New(`URL address does not have the form "host:port": http://h`), kindPermanent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want.String(), classify(live, tc.err).String())
		})
	}
	t.Run("caller canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		require.Equal(t, kindCanceled.String(), classify(ctx, rpctypes.ErrGRPCLearnerNotReady).String())
	})
}

func TestCanonURL(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"http://127.0.0.1:2380", "http://127.0.0.1:2380"},
		{"HTTPS://Node-1.Example:2380", "https://node-1.example:2380"},
		{"https://[::1]:2380", "https://[::1]:2380"},
	} {
		got, err := canonURL(tc.in)
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, got)
	}
	for _, bad := range []string{
		"", "127.0.0.1:2380", "unix:///tmp/x", "ftp://h:1", "http://h", "http://h:0", "http://h:99999",
		"http://h:x", "http://:2380", "http://h:2380/", "http://h:2380/p", "http://u@h:2380",
		"http://h:2380?q=1", "http://h:2380#f", " http://h:2380", "http://h:2380\n", "http://%zz:1",
	} {
		_, err := canonURL(bad)
		require.ErrorIs(t, err, ErrInvalidArgument, "%q", bad)
		require.Contains(t, err.Error(), fmt.Sprintf("%q", bad))
	}
	_, err := validatePeerURLs([]string{"http://h:1", "HTTP://H:1"})
	require.ErrorIs(t, err, ErrInvalidArgument, "duplicates")
	_, err = validatePeerURLs(nil)
	require.ErrorIs(t, err, ErrInvalidArgument, "none")
}

func TestInitialCluster(t *testing.T) {
	ms := []Member{
		{ID: 1, Name: "a", PeerURLs: []string{"http://a:2380"}},
		{ID: 2, Name: "", PeerURLs: []string{"http://x:2380"}, IsLearner: true}, // another, unstarted learner
		{ID: 3, Name: "", PeerURLs: []string{"http://c:2380", "http://c2:2380"}, IsLearner: true},
		{ID: 4, Name: "b", PeerURLs: []string{"http://b:2380"}},
	}
	// Every member is listed (etcd compares the count and the peer URLs):
	// unstarted ones under unique placeholders.
	require.Equal(t, "a=http://a:2380,unstarted-2=http://x:2380,c=http://c:2380,c=http://c2:2380,b=http://b:2380", initialCluster(ms, 3, "c"))
}

func TestQuorumCheck(t *testing.T) {
	st := &pb.StatusResponse{}
	vs := []Member{{ID: 1}, {ID: 2}, {ID: 3}}
	all := map[uint64]*pb.StatusResponse{1: st, 2: st, 3: st}
	oneDown := map[uint64]*pb.StatusResponse{1: st, 2: st, 3: nil}

	require.Nil(t, quorumCheck(1, vs, all), "3 healthy: removing one leaves 2 of 2")
	require.Nil(t, quorumCheck(3, vs, oneDown), "removing the down one leaves 2 healthy of 2")
	qe := quorumCheck(1, vs, oneDown)
	require.NotNil(t, qe, "removing a healthy one leaves 1 healthy of 2")
	require.Equal(t, QuorumError{ID: 1, Voters: 3, Healthy: 2, HealthyAfter: 1, Needed: 2}, *qe)
	require.ErrorIs(t, qe, ErrWouldLoseQuorum)
	require.NotNil(t, quorumCheck(1, vs[:1], map[uint64]*pb.StatusResponse{1: st}), "the last voter")
}

func TestFromPBSkipsGarbage(t *testing.T) {
	require.Empty(t, fromPB(nil))
	require.Empty(t, fromPB([]*pb.Member{nil, {ID: 0, Name: "zero"}}))
	got := fromPB([]*pb.Member{{ID: 7, Name: "n", PeerURLs: []string{"not a url"}}})
	require.Len(t, got, 1)
	require.False(t, sharesPeerURL(got[0], []string{"http://h:1"}), "garbage URLs match nothing")
}

func TestEvictionEvidence(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Progress
		want bool
	}{
		{"never started", Progress{}, true},
		{"behind the leader", Progress{Started: true, Reachable: true, LeaderKnown: true, LearnerApplied: 5, LeaderApplied: 100}, true},
		{"level with an idle leader", Progress{Started: true, Reachable: true, LeaderKnown: true, LearnerApplied: 100, LeaderApplied: 100}, false},
		{"leader unreadable", Progress{Started: true, Reachable: true, LearnerApplied: 5}, false},
		{"learner unreachable", Progress{Started: true, LeaderKnown: true, LeaderApplied: 100}, false},
	} {
		require.Equal(t, tc.want, evictionEvidence(tc.p), tc.name)
	}
}
