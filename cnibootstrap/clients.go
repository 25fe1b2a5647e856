package cnibootstrap

import (
	"fmt"
	"reflect"
	"strconv"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Clients are the apiserver clients a Waiter uses: Dynamic for every read
// (CustomResourceDefinitions included, as unstructured objects, so callers
// do not need the apiextensions-apiserver module) and Kube for
// SubjectAccessReviews and discovery. Both must be set and should carry
// the same credentials; the package doc lists the RBAC rules they need.
type Clients struct {
	Dynamic dynamic.Interface
	Kube    kubernetes.Interface
}

// NewClients builds both clients from one rest.Config. It does not block
// and makes no request; a nil config is an error wrapping ErrInvalidInput,
// and so is a config that client-go rejects (a Host that is not a URL, TLS
// files that cannot be read) or whose Host no request could be sent to: a
// scheme other than http or https, or a port outside 1–65535 (these two
// are not checked when the config sets its own Dial or Transport, which
// may understand them).
func NewClients(cfg *rest.Config) (Clients, error) {
	if cfg == nil {
		return Clients{}, fmt.Errorf("cnibootstrap: NewClients: %w", invalid("nil *rest.Config"))
	}
	if err := checkHost(cfg); err != nil {
		return Clients{}, fmt.Errorf("cnibootstrap: NewClients: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return Clients{}, fmt.Errorf("cnibootstrap: %w: NewClients: dynamic client: %w", ErrInvalidInput, err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return Clients{}, fmt.Errorf("cnibootstrap: %w: NewClients: clientset: %w", ErrInvalidInput, err)
	}
	return Clients{Dynamic: dyn, Kube: kube}, nil
}

// checkHost rejects a Host that client-go accepts but that no request can
// be sent to, unless cfg dials or transports by itself.
func checkHost(cfg *rest.Config) error {
	if cfg.Dial != nil || cfg.Transport != nil || cfg.WrapTransport != nil {
		return nil
	}
	u, _, err := rest.DefaultServerUrlFor(cfg)
	if err != nil {
		return fmt.Errorf("%w: Host %q: %w", ErrInvalidInput, cfg.Host, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return invalid("Host %q: scheme %q is not http or https", cfg.Host, u.Scheme)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return invalid("Host %q: port %s is not in 1-65535", cfg.Host, p)
		}
	}
	return nil
}

func (c Clients) validate() error {
	if isNil(c.Dynamic) {
		return invalid("Clients.Dynamic is nil")
	}
	if isNil(c.Kube) {
		return invalid("Clients.Kube is nil")
	}
	return nil
}

// isNil reports whether v is nil or an interface holding a nil pointer,
// map, func or the like (a typed nil would panic on first use).
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Func, reflect.Interface, reflect.Slice, reflect.Chan:
		return rv.IsNil()
	}
	return false
}
