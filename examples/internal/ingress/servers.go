package ingress

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Call is one admission request a webhook server answered: the server's
// own record, not the apiserver's.
type Call struct {
	At time.Time
	// Server is the version of the webhook server that answered.
	Server string
	// Operation is CREATE or UPDATE.
	Operation string
	// Namespace and Name are the Ingress's.
	Namespace, Name string
	// DryRun says the request was a dry-run (the gate's probe).
	DryRun bool
	// Allowed is the server's answer; Message says why it denied.
	Allowed bool
	Message string
}

// server is an HTTP(S) server on 127.0.0.1 that Shutdown stops.
type server struct {
	srv    *http.Server
	addr   string
	served chan error
}

func serve(h http.Handler, cfg *tls.Config) (*server, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &server{srv: &http.Server{Handler: h, TLSConfig: cfg, ReadHeaderTimeout: 10 * time.Second},
		addr: l.Addr().String(), served: make(chan error, 1)}
	go func() {
		if cfg != nil {
			s.served <- s.srv.ServeTLS(l, "", "")
			return
		}
		s.served <- s.srv.Serve(l)
	}()
	return s, nil
}

func (s *server) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if serr := <-s.served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// healthServer answers the readiness probes of the add-on's pods: 200 on
// every path (the kubelet's prober reads /<component>/<version>/healthz).
type healthServer struct {
	*server
	port int
}

func startHealthServer() (*healthServer, error) {
	s, err := serve(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok"))
	}), nil)
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(s.addr)
	var p int
	_, _ = fmt.Sscan(port, &p)
	return &healthServer{server: s, port: p}, nil
}

// webhookServer is one controller version's admission webhook:
// ingress-nginx's validating webhook, shaped down to one rule (the
// IngressClass must be "nginx"), logging every request it answers.
type webhookServer struct {
	*server
	version string
}

// URL is where the apiserver calls it.
func (w *webhookServer) URL() string { return "https://" + w.addr + "/networking/v1/ingresses" }

// startWebhook starts the webhook server of version v, with a serving
// certificate from the add-on's CA.
func (a *Addon) startWebhook(v string) (*webhookServer, error) {
	pair, err := a.opts.CA.Issue(a.opts.Dir, "admission-"+v, Controller+"-admission")
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(pair.CertFile, pair.KeyFile)
	if err != nil {
		return nil, err
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { a.admit(v, w, r) })
	s, err := serve(h, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, err
	}
	return &webhookServer{server: s, version: v}, nil
}

// admit answers one AdmissionReview and logs it.
func (a *Addon) admit(version string, w http.ResponseWriter, r *http.Request) {
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
		http.Error(w, "malformed AdmissionReview", http.StatusBadRequest)
		return
	}
	req := review.Request
	var ing networkingv1.Ingress
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	if err := json.Unmarshal(req.Object.Raw, &ing); err != nil {
		resp.Allowed, resp.Result = false, &metav1.Status{Code: http.StatusBadRequest, Message: "not an Ingress: " + err.Error()}
	} else if ing.Spec.IngressClassName == nil || *ing.Spec.IngressClassName != ClassName {
		resp.Allowed, resp.Result = false, &metav1.Status{Code: http.StatusForbidden,
			Message: fmt.Sprintf("ingress %s/%s: ingressClassName must be %q", req.Namespace, req.Name, ClassName)}
	}
	call := Call{At: time.Now(), Server: version, Operation: string(req.Operation), Namespace: req.Namespace, Name: req.Name,
		DryRun: req.DryRun != nil && *req.DryRun, Allowed: resp.Allowed}
	if resp.Result != nil {
		call.Message = resp.Result.Message
	}
	a.mu.Lock()
	a.log = append(a.log, call)
	a.mu.Unlock()
	review.Response, review.Request = resp, nil
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(&review)
}
