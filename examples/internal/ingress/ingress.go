// Package ingress holds the ingress-nginx-shaped add-on of incident 4
// (RKE2 v1.31.4 → v1.31.5, rke2 #7652) that the examples install and
// upgrade: a helm-install Job, a default-backend Deployment and Service, a
// controller DaemonSet (as RKE2 runs it), an admission webhook and the
// Ingress objects it validates. It is shared by examples/ingress and
// examples/controlplane.
//
// No container runs on the harness's hollow kubelets, so the example serves
// on 127.0.0.1 what the add-on's pods would: the readiness endpoints their
// httpGet probes read (the kubelet's real prober calls them), and the
// admission webhook of each controller version, over TLS with a certificate
// from the harness CA, which the kube-apiserver calls through a URL-based
// ValidatingWebhookConfiguration. The webhook server of a version stands for
// that version's controller pods: the old one is stopped once its pods are
// gone, and the new one serves from then on.
//
// Addon.Apply installs or upgrades the add-on to a Release with a hooks
// graph whose gates are cnibootstrap waits:
//
//	install-chart                       (the helm-install Job of the release)
//	→ default-backend   gate: the Job complete        (or failing: fail fast)
//	→ controller        gate: the default backend rolled out, its Service ready
//	→ webhook           gate: the controller rolled out, no old pod left
//	→ ingresses         gate: the webhook serving (a dry-run Ingress create passes)
//
// and reads the cluster, independently of the waits, as each hook starts
// (Snapshot), so that the order can be checked from outside.
package ingress

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeboot/kubeboot/cnibootstrap"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// Names of the add-on's objects, as RKE2 names them.
const (
	Chart      = "rke2-ingress-nginx"
	ChartJob   = "helm-install-" + Chart
	Controller = Chart + "-controller"
	Backend    = Chart + "-defaultbackend"
	Admission  = Chart + "-admission"
	// Probe is the name of the Ingress the webhook gate dry-runs.
	Probe = "kubeboot-webhook-probe"
	// ClassName is the IngressClass the webhook accepts.
	ClassName = "nginx"
)

// Hook names of the graph Apply runs, in dependency order.
const (
	HookInstallChart   = "install-chart"
	HookDefaultBackend = "default-backend"
	HookController     = "controller"
	HookWebhook        = "webhook"
	HookIngresses      = "ingresses"
)

// Hooks lists the hooks of Apply's graph in dependency order: each runs
// after the one before it.
var Hooks = []string{HookInstallChart, HookDefaultBackend, HookController, HookWebhook, HookIngresses}

// Ingresses are the Ingress objects every release applies.
var Ingresses = []string{"app", "api"}

// FailAfter is how many failures of the install Job end the wait for it:
// helm-controller runs it with a backoffLimit of 1000, so the Job itself
// would not say Failed for hours; the second failure shows that the chart
// fails every attempt, not once.
const FailAfter = 2

// DefaultGateTimeout bounds each gate's wait, as helm-controller's default
// --timeout of 300 s bounds a chart install.
const DefaultGateTimeout = 5 * time.Minute

var ingressGVR = schema.GroupVersionResource{Group: "networking.k8s.io", Version: "v1", Resource: "ingresses"}

// Release is one version of the chart.
type Release struct {
	// Version labels every object and pod of the release
	// (app.kubernetes.io/version) and tags its images, for example "v2".
	Version string
	// ChartExitCode is the exit code of the release's helm-install Job
	// container: 0 renders and installs the chart; anything else is a
	// chart that fails to render, failing every attempt (rke2 #7652).
	ChartExitCode int32
}

// Options say where the add-on runs.
type Options struct {
	// Namespace is the add-on's namespace (RKE2: kube-system); it must
	// exist.
	Namespace string
	// Kube and Clients reach the apiserver with admin rights.
	Kube    kubernetes.Interface
	Clients cnibootstrap.Clients
	// CA signs the webhook servers' certificates; the apiserver trusts it
	// through the webhook configuration's caBundle.
	CA *testenv.CA
	// Dir holds the webhook certificates; New creates it if needed.
	Dir string
	// Record, if set, receives the timeline: what each step did and saw.
	// It is called from several goroutines, one call at a time.
	Record func(step, outcome, detail string)
	// GateTimeout bounds each gate's wait; 0 means DefaultGateTimeout.
	GateTimeout time.Duration
}

// Addon is one install of the add-on and the servers the example runs for
// it. Apply calls must not overlap, and Close comes after the last; Calls
// is safe at any time.
type Addon struct {
	opts   Options
	health *healthServer

	recMu sync.Mutex

	mu       sync.Mutex
	webhooks map[string]*webhookServer // by version; only the serving one is running
	serving  string                    // the version whose webhook server runs
	log      []Call
}

// New creates Dir and starts the add-on's readiness endpoint server. It
// makes no request to the apiserver; Close stops what it started.
func New(opts Options) (*Addon, error) {
	switch {
	case opts.Namespace == "":
		return nil, errors.New("ingress: empty Namespace")
	case opts.Kube == nil, opts.Clients.Kube == nil, opts.Clients.Dynamic == nil:
		return nil, errors.New("ingress: nil clients")
	case opts.CA == nil:
		return nil, errors.New("ingress: nil CA")
	case opts.Dir == "":
		return nil, errors.New("ingress: empty Dir")
	}
	if opts.GateTimeout <= 0 {
		opts.GateTimeout = DefaultGateTimeout
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("ingress: %w", err)
	}
	h, err := startHealthServer()
	if err != nil {
		return nil, err
	}
	return &Addon{opts: opts, health: h, webhooks: map[string]*webhookServer{}}, nil
}

// WebhookConfiguration is the name of the add-on's
// ValidatingWebhookConfiguration: RKE2's in kube-system, suffixed with the
// namespace elsewhere so that installs in several namespaces (tests) do
// not share it.
func (a *Addon) WebhookConfiguration() string {
	if a.opts.Namespace == "kube-system" {
		return Admission
	}
	return Admission + "-" + a.opts.Namespace
}

// Namespace returns the add-on's namespace.
func (a *Addon) Namespace() string { return a.opts.Namespace }

// Calls returns the webhook servers' request log so far, in the order the
// requests arrived.
func (a *Addon) Calls() []Call {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Call(nil), a.log...)
}

// Close stops every server the add-on started. Objects stay in the cluster.
func (a *Addon) Close() error {
	a.mu.Lock()
	servers := make([]*webhookServer, 0, len(a.webhooks))
	for _, s := range a.webhooks {
		servers = append(servers, s)
	}
	a.webhooks, a.serving = map[string]*webhookServer{}, ""
	a.mu.Unlock()
	var errs []error
	for _, s := range servers {
		errs = append(errs, s.close())
	}
	errs = append(errs, a.health.close())
	return errors.Join(errs...)
}

func (a *Addon) record(step, outcome, format string, args ...any) {
	if a.opts.Record == nil {
		return
	}
	a.recMu.Lock()
	defer a.recMu.Unlock()
	a.opts.Record(step, outcome, fmt.Sprintf(format, args...))
}

// gate returns a hook Gate that waits, bounded by the gate timeout, until
// reqs hold, recording each change of what is unmet; the first report is
// kept in res.Held[hook] as evidence that the gate held something back.
// Its error is cnibootstrap.Wait's; the runner's error names the hook and
// says it came from the gate.
func (a *Addon) gate(hook string, res *Result, reqs ...cnibootstrap.Requirement) func(context.Context) error {
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, a.opts.GateTimeout)
		defer cancel()
		last := "-"
		return cnibootstrap.Wait(ctx, a.opts.Clients, reqs, cnibootstrap.WithProgress(func(unmet []cnibootstrap.Unmet) {
			line := ""
			for i, u := range unmet {
				if i > 0 {
					line += "; "
				}
				line += u.String()
			}
			if line == last {
				return
			}
			last = line
			if len(unmet) == 0 {
				a.record("gate "+hook, "open", "every requirement holds")
				return
			}
			res.noteHeld(hook, line)
			a.record("gate "+hook, fmt.Sprintf("%d unmet", len(unmet)), "%s", line)
		}))
	}
}
