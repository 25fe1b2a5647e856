// Command binaries finds or builds every Kubernetes binary the tests run
// (kube-apiserver, kube-controller-manager, kube-scheduler, hollow-kubelet;
// see testenv.Components) into the user cache directory and prints one shell
// line per binary,
//
//	export KUBEBOOT_KUBE_APISERVER='/home/me/.cache/kubeboot/.../kube-apiserver'
//
// so `eval "$(go run ./internal/testenv/cmd/binaries)"` points the test
// binaries at them and no test spends its timeout on a build. A variable
// already set is checked and kept. Build progress goes to stderr.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"

	"github.com/kubeboot/kubeboot/internal/testenv"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	var lines []string
	for _, c := range testenv.Components() {
		path, err := testenv.ComponentBinary(ctx, c.Name, logf)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		lines = append(lines, fmt.Sprintf("export %s=%s", c.Env, shellQuote(path)))
	}
	fmt.Println(strings.Join(lines, "\n"))
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
