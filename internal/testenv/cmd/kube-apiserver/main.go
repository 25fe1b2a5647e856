// Command kube-apiserver prints the path of the kube-apiserver binary the
// tests use, building it into the user cache directory first if needed
// (see testenv.KubeAPIServerBinary). `make test` runs it before the suite so
// no test binary spends its timeout on the build.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/kubeboot/kubeboot/internal/testenv"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	path, err := testenv.KubeAPIServerBinary(ctx, logf)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(path)
}
