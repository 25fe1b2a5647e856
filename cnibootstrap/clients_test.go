package cnibootstrap_test

import (
	"context"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubeboot/kubeboot/cnibootstrap"
)

// TestRequestsThatCannotBeSent: an address client-go accepts but no
// request can be sent to (a port outside 1-65535, a scheme net/http does
// not speak) is refused by NewClients, as are local TLS configuration
// errors (a CA that is not PEM, key files missing); clients built without NewClients
// make the first request fail in the client library before anything is
// sent, and Wait and Check return that at once as ErrInvalidInput naming
// the request, instead of retrying it until the deadline.
func TestRequestsThatCannotBeSent(t *testing.T) {
	for _, host := range []string{"http://127.0.0.1:99999", "127.0.0.1:65536", "https://127.0.0.1:0", "ftp://127.0.0.1:21"} {
		_, err := cnibootstrap.NewClients(&rest.Config{Host: host})
		requireInvalid(t, err, "NewClients: invalid input: Host "+`"`+host+`"`)
	}
	// Local TLS configuration errors are client-go's own refusals.
	_, err := cnibootstrap.NewClients(&rest.Config{Host: "https://127.0.0.1:6443", TLSClientConfig: rest.TLSClientConfig{CAData: []byte("not a PEM")}})
	requireInvalid(t, err, "NewClients: dynamic client")
	_, err = cnibootstrap.NewClients(&rest.Config{Host: "https://127.0.0.1:6443", TLSClientConfig: rest.TLSClientConfig{CertFile: "/nonexistent/client.crt", KeyFile: "/nonexistent/client.key"}})
	requireInvalid(t, err, "NewClients: dynamic client")
	// A config that dials by itself may understand such an address.
	_, err = cnibootstrap.NewClients(&rest.Config{Host: "http://127.0.0.1:99999",
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) { return nil, net.ErrClosed }})
	require.NoError(t, err)

	for _, tc := range []struct {
		host string
		req  cnibootstrap.Requirement
		want string
	}{
		{"http://127.0.0.1:99999", cnibootstrap.ObjectExists{GVR: configMapGVR, Namespace: "ns", Object: "x"},
			"list configmaps named x in namespace ns: invalid input: the request cannot be sent"},
		{"ftp://127.0.0.1:21", cnibootstrap.ClusterRoleExists{Role: "r"},
			"list clusterroles.rbac.authorization.k8s.io named r: invalid input: the request cannot be sent"},
		{"http://127.0.0.1:99999", cnibootstrap.Allowed{ServiceAccount: types.NamespacedName{Namespace: "ns", Name: "sa"}, Verb: "list", Resource: "pods"},
			"invalid input: the request cannot be sent"},
		{"http://127.0.0.1:99999", cnibootstrap.ServiceReady{Namespace: "ns", Service: "svc"},
			"list endpointslices.discovery.k8s.io with labels kubernetes.io/service-name=svc in namespace ns: invalid input: the request cannot be sent"},
	} {
		t.Run(tc.host+" "+tc.req.Name(), func(t *testing.T) {
			cfg := &rest.Config{Host: tc.host}
			dyn, err := dynamic.NewForConfig(cfg)
			require.NoError(t, err)
			kube, err := kubernetes.NewForConfig(cfg)
			require.NoError(t, err)
			c := cnibootstrap.Clients{Dynamic: dyn, Kube: kube}
			w, err := cnibootstrap.New(c, []cnibootstrap.Requirement{tc.req}, testBackoff())
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), guard)
			defer cancel()
			for name, call := range map[string]func(context.Context) error{"Wait": w.Wait, "Check": w.Check} {
				err := call(ctx)
				requireInvalid(t, err, tc.want)
				assert.NotErrorIs(t, err, context.DeadlineExceeded, "%s", name)
			}
		})
	}
}
