package etcdmember_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubeboot/kubeboot/etcdmember"
)

// A joining control-plane node adds its etcd as a learner, starts it with
// the initial-cluster string Join computed, and has it promoted once it
// has caught up. If etcd fails to start or stalls, the learner this call
// added is removed again, so the next attempt finds a free learner slot.
//
// This example is compiled but not run: it needs a running etcd cluster
// and an etcd binary. The tests run the same flow against embedded etcd.
func ExampleManager_Join() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"https://10.0.0.1:2379"}, // existing voters
		DialTimeout: 5 * time.Second,
		// TLS: the client certificate every member accepts.
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer cli.Close()

	m, err := etcdmember.New(cli, etcdmember.WithStallTimeout(10*time.Minute))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	var etcd *exec.Cmd
	res, err := m.Join(ctx, "node-2", []string{"https://10.0.0.2:2380"}, etcdmember.JoinOptions{Cleanup: true},
		func(ctx context.Context, initialCluster string) error {
			etcd = exec.Command("etcd",
				"--name=node-2",
				"--initial-advertise-peer-urls=https://10.0.0.2:2380",
				"--listen-peer-urls=https://10.0.0.2:2380",
				"--advertise-client-urls=https://10.0.0.2:2379",
				"--listen-client-urls=https://10.0.0.2:2379",
				"--initial-cluster="+initialCluster,
				"--initial-cluster-state=existing")
			return etcd.Start() // Join waits for the member to start
		})
	if err != nil {
		fmt.Fprintln(os.Stderr, "join:", err)
		return
	}
	fmt.Printf("member %x is a voter after %d promote attempt(s)\n", res.Member.ID, res.Promote.Attempts)
}

// Promote decides from the member list, so running it for a member that is
// already a voter — after a crash, or when the reply to an earlier promote
// was lost — is success, not "can only promote a learner member".
//
// Compiled but not run: it needs a running etcd cluster.
func ExampleManager_Promote() {
	ctx := context.Background()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://127.0.0.1:2379"}})
	if err != nil {
		return
	}
	defer cli.Close()
	m, err := etcdmember.New(cli)
	if err != nil {
		return
	}
	const learnerID = 0x8e9e05c52164694d
	res, err := m.Promote(ctx, learnerID)
	switch {
	case err == nil && res.AlreadyVoter:
		fmt.Println("already a voter; nothing sent")
	case err == nil:
		fmt.Println("promoted after", res.Attempts, "attempt(s)")
	default:
		fmt.Println("not promoted:", err)
	}
}

// Bad input is an error at the call, never a panic, and callers branch on
// it with errors.Is.
func ExampleNew() {
	_, err := etcdmember.New(nil)
	fmt.Println(err)
	fmt.Println(errors.Is(err, etcdmember.ErrInvalidArgument))
	// Output:
	// etcdmember: invalid argument: nil etcd client
	// true
}
