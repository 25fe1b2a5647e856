//go:build tools

// Package etcdbuild exists only to pin the etcd server (go.etcd.io/etcd/server/v3,
// whose root package is the etcd command) for `go build`; it is never
// imported.
package etcdbuild

import _ "go.etcd.io/etcd/server/v3"
