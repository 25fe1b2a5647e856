package readiness_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubeboot/kubeboot/readiness"
)

// An error a client raises from its own configuration, before anything is
// sent, cannot go away on retry: every check makes it a permanent
// ErrInvalid error at the first attempt, as TCPDial does for the same
// address, instead of retrying it as ErrUnreachable until the deadline
// (the context here ends only at the test's guard). No server is needed:
// nothing is ever sent.
func TestClientSideErrorsArePermanent(t *testing.T) {
	ctx := testCtx(t)
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: "http://127.0.0.1:99999"})
	require.NoError(t, err, "client-go accepts the host; the port is rejected when dialling")
	// An http.Client whose proxy has a port out of range: the URL of the
	// check is fine, the client's configuration is not.
	badProxy := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: "127.0.0.1:99999"})}}
	etcd, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://127.0.0.1:99999", "127.0.0.1:123456"}, Logger: zap.NewNop()})
	require.NoError(t, err, "the etcd client accepts the endpoints; it rejects them when dialling")
	defer func() { _ = etcd.Close() }()

	tests := []struct {
		name  string
		check readiness.Check
		want  string
	}{
		{"APIServerReady", readiness.APIServerReady(cs.Discovery().RESTClient()), "address 99999: invalid port"},
		{"StaticPodReady", readiness.StaticPodReady(cs, "kube-system", "kube-apiserver-n1"), "address 99999: invalid port"},
		{"KubeletStaticPodReady", readiness.KubeletStaticPodReady(badProxy, "http://127.0.0.1:10255", "kube-system", "kube-apiserver-n1"), "address 99999: invalid port"},
		{"HTTPGet", readiness.HTTPGet(badProxy, "http://127.0.0.1:8080/healthz", nil), "address 99999: invalid port"},
		{"EtcdHealthy", readiness.EtcdHealthy(etcd), `no endpoint of the client can ever be dialled: etcd endpoint "http://127.0.0.1:99999" can never be dialled: port 99999 is out of range`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opt, attempts := observer()
			err := readiness.Wait(ctx, tt.check, opt)
			t.Log(err)
			require.ErrorIs(t, err, readiness.ErrInvalid)
			assert.NotErrorIs(t, err, readiness.ErrUnreachable)
			assert.NotErrorIs(t, err, context.DeadlineExceeded)
			assert.Contains(t, err.Error(), tt.want)
			assert.Len(t, attempts, 1, "one attempt, no retry")
		})
	}

	// Under Wait, StaticPodReady's watch fails the same way; outside,
	// its Watch returns the permanent error instead of retrying.
	werr := readiness.StaticPodReady(cs, "kube-system", "kube-apiserver-n1").(readiness.Watcher).Watch(ctx, func() {})
	require.ErrorIs(t, werr, readiness.ErrInvalid)
	assert.Contains(t, werr.Error(), "address 99999: invalid port")
}
