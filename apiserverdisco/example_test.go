package apiserverdisco_test

import (
	"context"
	"fmt"
	"time"

	"github.com/kubeboot/kubeboot/apiserverdisco"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// An apiserver publishes its address; a component that needs the
// apiservers starts watching before anything is published and waits
// through "not yet set". It runs against a real embedded etcd.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	etcd, err := testenv.StartCluster(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer etcd.Close()
	client := etcd.Client()

	w, err := apiserverdisco.NewWatcher(ctx, apiserverdisco.EtcdPrefix(client, apiserverdisco.DefaultPrefix))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer w.Close()

	reg, err := apiserverdisco.Publish(ctx, client, "cp-1", "10.0.0.1:6443")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Close()

	addrs, err := w.WaitForAddresses(ctx, 1)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(addrs)
	// Output: [10.0.0.1:6443]
}
