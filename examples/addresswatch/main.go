// Command addresswatch is a node agent's view of the apiservers: it follows
// the live set of apiserver addresses published in etcd (one leased key per
// apiserver, or the k3s/RKE2 "<program>/apiaddresses" key with --legacy) and
// prints each set as it changes. "Not yet set" is a waiting state, not an
// error, and an etcd outage never hands it an empty set.
//
//	go run ./examples/addresswatch --endpoints http://127.0.0.1:2379
//	go run ./examples/addresswatch --endpoints https://127.0.0.1:2379 --legacy rke2
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
		fmt.Fprintln(os.Stderr, "addresswatch:", err)
		os.Exit(1)
	}
}

// run prints address sets until ctx ends or --count sets were printed.
func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("addresswatch", flag.ContinueOnError)
	endpoints := fs.String("endpoints", "", "comma-separated etcd client URLs")
	prefix := fs.String("prefix", apiserverdisco.DefaultPrefix, "key prefix the apiservers publish under")
	legacy := fs.String("legacy", "", "read the k3s/RKE2 key <program>/apiaddresses instead (e.g. rke2, k3s)")
	count := fs.Int("count", 0, "exit after this many sets (0: until Ctrl-C)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *endpoints == "" {
		return errors.New("--endpoints is required")
	}
	client, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*endpoints, ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer client.Close()

	src := apiserverdisco.EtcdPrefix(client, *prefix)
	if *legacy != "" {
		src = apiserverdisco.LegacyKey(client, *legacy)
	}
	w, err := apiserverdisco.NewWatcher(ctx, src, apiserverdisco.WithErrorHandler(func(err error) {
		var bad *apiserverdisco.MalformedValueError
		if errors.As(err, &bad) {
			fmt.Fprintln(out, "skipped:", err) // a malformed value; the good addresses stay
			return
		}
		fmt.Fprintln(out, "watch error (retrying):", err)
	}))
	if err != nil {
		return err
	}
	defer w.Close()
	fmt.Fprintln(out, "waiting for apiserver addresses...")
	for n := 0; *count == 0 || n < *count; n++ {
		snap, err := w.Next(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "apiservers (v%d): %s\n", snap.Version, strings.Join(snap.Addresses, " "))
	}
	return nil
}
