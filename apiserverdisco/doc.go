// Package apiserverdisco tells the components of a control plane where the
// apiservers are: each apiserver publishes its address in etcd under a
// lease, and watchers get the live set pushed to them.
//
// # Why
//
// k3s and RKE2 keep the apiserver addresses in one etcd key,
// "<program>/apiaddresses", written by a leader-elected controller with no
// TTL, and readers poll it every 5 s. Agents logged "Failed to get
// apiserver addresses from etcd: apiserver addresses not yet set" as an
// error while the key was simply not written yet, a dead server stayed in
// the list until the controller noticed, and an empty list once replaced
// every endpoint a client had (k3s #11934, fixed in v1.32.3 by skipping
// empty lists and debouncing for 3 s). This is incident 2 of kubeboot's
// DESIGN.md.
//
// This package makes the other choices:
//
//   - One key per apiserver (<prefix><id>, the value a small versioned JSON
//     document {"version":1,"address":"10.0.0.1:6443"}), attached to a
//     lease its Registration keeps alive: a dead server's address
//     disappears within the TTL by itself, and a lost lease is replaced.
//   - Watchers list once at a revision and then watch from the next one:
//     the set is pushed, not polled; polling with backoff is only how they
//     come back after etcd was unavailable.
//   - "Not yet set" is a waiting state (WaitForAddresses waits through it)
//     and is never logged as an error. It is observable: Watcher.State
//     says whether the source is "not yet set" right now and why, so a
//     node agent can report "waiting: apiserver addresses not yet set".
//   - A non-empty set is never replaced by an empty one because of a
//     failure, a restart or a re-list; an empty set is delivered only by
//     EtcdPrefix, when the keys were seen to go away, and optionally only
//     after a hold-down (WithEmptyHoldDown). LegacyKey and EndpointSlices
//     never deliver an empty set: an empty legacy value, or EndpointSlices
//     without a ready endpoint (what a single apiserver leaves behind
//     while it restarts gracefully), mean "not yet set" and keep the last
//     good set.
//   - Removals are debounced (WithDebounce), so a flapping apiserver yields
//     one update; additions are delivered at once. Sets are sorted,
//     de-duplicated and delivered only when they changed.
//   - Garbage in etcd (bad JSON, bad addresses) is skipped and reported by
//     key (WithErrorHandler, and the logger), once per value however many
//     bad entries it has and however often it is re-listed; it never
//     crashes the watcher nor erases the good addresses.
//   - The host process is never put at risk: bad input, typed nils
//     included, is an error wrapping ErrInvalidInput at the call; a panic in
//     code the caller supplied (error handler, logger sink, backoff policy,
//     client implementations) is recovered and reported as a *PanicError;
//     retry delays are never shorter than MinRetryDelay.
//
// # Use
//
// Each apiserver host publishes itself for as long as it serves:
//
//	reg, err := apiserverdisco.Publish(ctx, etcdClient, nodeName, "10.0.0.1:6443")
//	if err != nil { ... }          // bad ID or address, or etcd refused the first put
//	defer reg.Close()               // deletes the key at once; without it, it expires with the TTL
//
// Anything that needs the apiservers watches them:
//
//	w, err := apiserverdisco.NewWatcher(ctx, apiserverdisco.EtcdPrefix(etcdClient, ""))
//	if err != nil { ... }
//	defer w.Close()
//	addrs, err := w.WaitForAddresses(ctx, 1) // waits through "not yet set";
//	                                          // w.State() says why meanwhile
//	for {
//		snap, err := w.Next(ctx) // each time the set changes
//		if err != nil { ... }
//		reconfigure(snap.Addresses)
//	}
//
// Three sources give the same Snapshots: EtcdPrefix (what Publish writes),
// LegacyKey (the k3s/RKE2 "<program>/apiaddresses" key, so a running k3s
// or RKE2 cluster can be read as it is) and EndpointSlices (the
// "kubernetes" Service's EndpointSlices, through an informer).
//
// # k3s and RKE2 interop
//
// StartLegacyKeyWriter keeps the legacy key "<program>/apiaddresses" equal
// to the live set of a Source (usually EtcdPrefix), byte for byte as k3s
// writes it, so unmodified k3s and RKE2 agents and servers read the
// addresses kubeboot publishes. It replaces k3s's own apiaddresses
// controller, which must not run next to it; writers on several nodes
// elect one leader in etcd, and none ever writes an empty list:
//
//	lw, err := apiserverdisco.StartLegacyKeyWriter(ctx, etcdClient, "rke2", nodeName,
//		apiserverdisco.EtcdPrefix(etcdClient, ""))
//	if err != nil { ... }
//	defer lw.Close() // resigns: the writer on another node takes over at once
//
// # Goroutines and cancellation
//
// Publish, NewWatcher and StartLegacyKeyWriter start goroutines that live
// until their context ends or Close returns; Close waits for them. Blocking calls (Next,
// WaitForAddresses) take a context and return an error wrapping ctx.Err()
// that names the source and what was still missing.
//
// # Permissions
//
// With etcd authentication on, a publisher's role needs readwrite on its
// prefix range (leases need no permission of their own; revoking one needs
// write on the keys attached to it), and a watcher's role needs read on the
// prefix range or on the legacy key. A LegacyKeyWriter's role needs
// readwrite on the legacy key and on the range of its election prefix
// (LegacyWriterElectionPrefix + "<program>/"), plus read on what its
// source reads.
//
// The EndpointSlices source needs exactly this RBAC rule, in namespace
// default (a Role there, bound to the watcher's identity):
//
//	apiGroups: ["discovery.k8s.io"]
//	resources: ["endpointslices"]
//	verbs:     ["list", "watch"]
//
// (The informer never issues a get.) The tests run it as a ServiceAccount
// bound to this rule only.
package apiserverdisco
