// Command k3s-apiaddresses is a recipe: apiserver address discovery for a
// k3s/RKE2-style control plane, with apiserverdisco.Publish on every server
// and apiserverdisco.NewWatcher wherever the addresses are needed.
//
// It replaces k3s's apiaddresses controller (pkg/etcd/apiaddresses_controller.go,
// registerEndpointsHandlers): one leader-elected server watches the
// "kubernetes" EndpointSlices and writes them as one JSON list to the etcd key
// "<program>/apiaddresses", with no TTL; and its readers, which poll that key
// with GetAPIServerURLsFromETCD — getAPIAddressFromEtcd
// (pkg/cli/server/server.go) every 5 s until the list is non-empty, logging
// "apiserver addresses not yet set" on the way (k3s #11934).
//
// On the same injected fault — an apiserver host dies without cleaning up —
// k3s keeps its address in the key until the elected controller rewrites it,
// and readers see the change up to 5 s after that; here the dead server's key
// expires with its lease (--ttl) and every watcher is pushed the smaller set,
// never an empty one because etcd was unreachable.
//
//	go run ./examples/recipes/k3s-apiaddresses --endpoints http://127.0.0.1:2379 \
//	    --id node1 --advertise-address 10.0.0.1:6443
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kubeboot/kubeboot/apiserverdisco"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "k3s-apiaddresses:", err)
		os.Exit(1)
	}
}

// run publishes this server's address (with --advertise-address) and prints
// the live set of apiservers each time it changes, until ctx ends or --count
// sets were printed. out must be safe for concurrent writes: the watcher's
// error handler writes to it from the watcher's goroutine.
func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("k3s-apiaddresses", flag.ContinueOnError)
	endpoints := fs.String("endpoints", "", "comma-separated etcd client URLs")
	id := fs.String("id", "", "this server's name (its key under the prefix)")
	advertise := fs.String("advertise-address", "", "this apiserver's host:port; empty to only watch (an agent)")
	ttl := fs.Duration("ttl", apiserverdisco.DefaultTTL, "a dead server's address is gone within this time")
	count := fs.Int("count", 0, "exit after this many sets (0: until Ctrl-C)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *endpoints == "" || (*advertise != "" && *id == "") {
		return errors.New("--endpoints is required, and --id with --advertise-address")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*endpoints, ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()

	// The controller's job, done by every server for itself: its own key,
	// under a lease it keeps alive while it serves.
	if *advertise != "" {
		reg, err := apiserverdisco.Publish(ctx, cli, *id, *advertise, apiserverdisco.WithTTL(*ttl))
		if err != nil {
			return err
		}
		defer reg.Close() // deletes the key now; a crash leaves it to the TTL
		fmt.Fprintf(out, "published %s at %s\n", reg.Address(), reg.Key())
	}

	// The readers' job: one list, then a watch. "Not yet set" is waited
	// through quietly; an etcd outage keeps the last good set.
	w, err := apiserverdisco.NewWatcher(ctx, apiserverdisco.EtcdPrefix(cli, ""),
		apiserverdisco.WithErrorHandler(func(err error) { fmt.Fprintln(out, "watch error (retrying):", err) }))
	if err != nil {
		return err
	}
	defer w.Close()
	for n := 0; *count == 0 || n < *count; n++ {
		snap, err := w.Next(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "apiservers (v%d): %s\n", snap.Version, strings.Join(snap.Addresses, " "))
	}
	return nil
}
