//go:build tools

// Package apiserverbuild exists only to pin k8s.io/kubernetes/cmd/kube-apiserver
// for `go build`; it is never imported.
package apiserverbuild

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
