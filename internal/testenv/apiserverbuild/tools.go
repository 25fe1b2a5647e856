//go:build tools

// Package apiserverbuild exists only to pin the Kubernetes components the
// tests run (kube-apiserver, kube-controller-manager, kube-scheduler; the
// hollow kubelet is ./cmd/hollow-kubelet) for `go build`; it is never
// imported.
package apiserverbuild

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
