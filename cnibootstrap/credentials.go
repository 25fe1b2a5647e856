package cnibootstrap

import (
	"context"
	"time"
)

// versionPath is what the credential check reads: every authenticated
// user may (the default system:public-info-viewer ClusterRole), and any
// answer but 401, a 403 included, proves the credentials are accepted.
const versionPath = "/version"

// watchCredentials re-validates the waiter's credentials while it waits.
// An open watch does not end when its credentials are revoked (a
// ServiceAccount deleted, a token file rotated away): the apiserver
// authenticates a request once, when it starts. So, once per interval of
// the backoff floor (a policy of its own, never reset), it sends a GET of
// /version; a 401 ends the Wait through env.fail with an error wrapping
// ErrUnauthorized. Other answers (a 403 included: authentication passed)
// and errors are left to the requests that need the apiserver. Clients
// without a discovery REST client (fakes) are not checked.
func (e *env) watchCredentials(ctx context.Context) {
	disco := e.clients.Kube.Discovery()
	if isNil(disco) || isNil(disco.RESTClient()) {
		return
	}
	rc := disco.RESTClient()
	b, err := newPolicy(e.newBackoff)
	if err != nil {
		e.failFor("credential check", err)
		return
	}
	for {
		d, err := b.next()
		if err != nil {
			e.failFor("credential check", err)
			return
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		err = rc.Get().AbsPath(versionPath).Do(ctx).Error()
		if err = classify(err, request{verb: "get", url: versionPath}); isFatal(err) && ctx.Err() == nil {
			e.fail(err)
			return
		}
	}
}
