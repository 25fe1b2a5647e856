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

// A kubeboot control plane keeps the k3s key "k3s/apiaddresses" up to date
// from the published addresses, so unmodified k3s agents find the
// apiservers; the value is byte for byte what k3s's own controller writes.
// (k3s's controller must not run next to it.) It runs against a real
// embedded etcd.
func ExampleStartLegacyKeyWriter() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	etcd, err := testenv.StartCluster(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer etcd.Close()
	client := etcd.Client()

	for id, addr := range map[string]string{"cp-1": "10.0.0.1:6443", "cp-2": "10.0.0.2:6443"} {
		reg, err := apiserverdisco.Publish(ctx, client, id, addr)
		if err != nil {
			fmt.Println(err)
			return
		}
		defer reg.Close()
	}

	// Follow the key, as a k3s agent would read it.
	changes := client.Watch(ctx, "k3s/apiaddresses")

	w, err := apiserverdisco.StartLegacyKeyWriter(ctx, client, "k3s", "cp-1", apiserverdisco.EtcdPrefix(client, ""))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer w.Close()

	for resp := range changes {
		for _, ev := range resp.Events {
			if string(ev.Kv.Value) == "[\"10.0.0.1:6443\",\"10.0.0.2:6443\"]\n" {
				fmt.Printf("%q\n", ev.Kv.Value)
				return
			}
		}
	}
	// Output: "[\"10.0.0.1:6443\",\"10.0.0.2:6443\"]\n"
}
