package readiness

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// configSourceAnnotation is the annotation the kubelet puts on every pod
// it runs, naming where the pod came from: "file" or "http" for a static
// pod, "api" for a pod from the apiserver.
const configSourceAnnotation = "kubernetes.io/config.source"

// MaxKubeletPodsBytes is how much of a kubelet's GET /pods answer
// KubeletStaticPodReady reads; a longer answer fails the attempt.
const MaxKubeletPodsBytes = 64 << 20

// KubeletStaticPodReady returns a check that the static pod
// namespace/name (named "<pod>-<node>" by the kubelet, as its mirror pod
// is, e.g. "kube-apiserver-node1" in "kube-system") is up as the node's
// own kubelet sees it. GET <kubeletURL>/pods through c lists the pods the
// kubelet runs, static pods included, with the status the kubelet holds
// for them; the check passes when exactly one of them has that namespace
// and name and it is a static pod (its kubernetes.io/config.source
// annotation is not "api"), is not terminating, is Running with its Ready
// condition True and every container ready, and, with WithExpectedHash
// or WithHashChangedFrom, carries the right kubernetes.io/config.hash:
// StaticPodReady's rules, read from the kubelet instead of the apiserver.
// Once the kubelet has read a rewritten manifest it lists the new pod
// (new hash, Pending until the old pod has terminated and the new one
// runs) in place of the old one; should it list two pods of that name,
// the check fails rather than pick one. The failure names the pod, the
// kubelet and every rule that fails ("static pod
// kube-system/kube-apiserver-node1 on the kubelet at
// https://127.0.0.1:10250: phase Pending; no Ready condition; ...").
//
// When to use which: StaticPodReady asks the apiserver about the mirror
// pod. It is watch-driven (Wait reacts within milliseconds and its
// requests do not grow with the wait), needs only a Role on pods, and
// works from anywhere; but it cannot answer while the apiserver is down,
// and the mirror pod is the kubelet's report, written when the apiserver
// takes it. When the pod being replaced is the kube-apiserver itself (or
// the etcd under it), that is asking the thing that is going away: use
// KubeletStaticPodReady on the node, which answers with the apiserver
// down and reads the kubelet's own state. The kubelet has no watch, so
// this check is not a Watcher: Wait polls it with its backoff, by default
// from DefaultInitialDelay, doubling, capped at DefaultMaxDelay (2 s),
// one GET /pods per attempt; it reacts within one poll, and a NotReady
// shorter than a poll can go unseen. Give Wait WithBackoff to poll at
// another rate. The two compose: All of KubeletStaticPodReady for the
// new kube-apiserver pod and APIServerReady says that the new apiserver
// runs and serves.
//
// Credentials and RBAC: c carries the credentials (rest.HTTPClientFor
// makes one from a *rest.Config); kubeletURL is the kubelet's secure
// server, "https://127.0.0.1:10250" on its node by default, and a path in
// it is kept as a prefix of /pods. The kubelet verifies client
// certificates itself (against its client CA file) but bearer tokens
// through the apiserver (TokenReview, cached for the KubeletConfiguration's
// authentication.webhook.cacheTTL, 2 min by default): to read a kubelet
// while the apiserver is down, present a client certificate. In Webhook
// authorization mode the kubelet asks the apiserver (SubjectAccessReview)
// whether the caller may get resource "nodes", name <node>, subresource
// "pods", and if not, subresource "proxy" (Kubernetes 1.33 and later,
// where the KubeletFineGrainedAuthz feature is on by default; earlier
// kubelets, or with the feature off, ask for "proxy" only). The rule to
// grant is a ClusterRole with apiGroups [""], resources ["nodes/pods"],
// verbs ["get"] (resourceNames [<node>] limits it to one node); add
// "nodes/proxy" only for kubelets that ask for nothing else, since
// "proxy" also authorizes the kubelet's other endpoints, /exec, /attach
// and /portForward among them. The kubelet caches an allow for its
// authorization.webhook.cacheAuthorizedTTL (5 min by default) from the
// request that asked, and a deny for cacheUnauthorizedTTL (30 s). While
// the apiserver is down, a request whose decision is not cached fails
// with HTTP 500 "Authorization error", so: make one request (a Check, or
// a Wait that passes) with the credentials shortly before the apiserver
// goes away; and grant nodes/pods, not only nodes/proxy: the kubelet asks about
// "pods" first, and once that cached deny has expired, the failed
// question about "pods" ends the request before "proxy" is asked. The
// read-only port (plain http, 10255 where it is enabled; a
// KubeletConfiguration leaves it off by default) needs no credentials.
//
// Failures of the request name the pod and the kubelet too: no HTTP
// answer wraps ErrUnreachable, 401/403 wrap ErrAccessDenied, other
// statuses quote the start of the body; an error c raises from its own
// configuration before sending anything (a proxy address with a port out
// of range, say) is a permanent ErrInvalid error. A nil c, a kubeletURL that is not
// an absolute http or https URL with a valid host and port (and no
// query, fragment or user information), an empty namespace or name, or a
// bad option makes every call fail with a permanent ErrInvalid error
// naming the argument. A panic in c's transport is recovered and fails
// the check with a permanent error wrapping ErrPanic.
// KubeletStaticPodReady does not block; the check is safe for concurrent
// use if c is, and each call is one request bounded by ctx.
func KubeletStaticPodReady(c *http.Client, kubeletURL, namespace, name string, opts ...PodOption) Check {
	k := &kubeletPodCheck{c: c, url: kubeletURL, rules: podCheck{ns: namespace, name: name}}
	const fn = "KubeletStaticPodReady"
	switch {
	case c == nil:
		k.bad = invalid("%s: nil *http.Client", fn)
	case namespace == "":
		k.bad = invalid("%s: empty namespace", fn)
	case name == "":
		k.bad = invalid("%s: empty pod name", fn)
	default:
		if k.podsURL, k.bad = kubeletPodsURL(fn, kubeletURL); k.bad == nil {
			k.bad = applyOptions(fn, &k.rules, opts)
		}
	}
	return k
}

// kubeletPodsURL checks a kubelet base URL and returns its /pods URL.
func kubeletPodsURL(fn, raw string) (string, error) {
	u, err := url.Parse(raw)
	switch {
	case raw == "":
		return "", invalid("%s: empty kubelet URL", fn)
	case err != nil:
		return "", invalid("%s: malformed kubelet URL %q: %v", fn, raw, err)
	case (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return "", invalid("%s: kubelet URL %q is not an absolute http or https URL", fn, raw)
	case u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return "", invalid("%s: kubelet URL %q: want scheme, host, port and an optional path only", fn, raw)
	}
	if err := checkHostPort(u.Hostname(), u.Port(), true); err != nil {
		return "", invalid("%s: kubelet URL %q: %v", fn, raw, err)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/pods"
	u.RawPath = ""
	return u.String(), nil
}

type kubeletPodCheck struct {
	c       *http.Client
	url     string
	podsURL string
	rules   podCheck // namespace, name and hash options; no client
	bad     error
}

func (k *kubeletPodCheck) Name() string {
	return "static pod " + k.rules.ns + "/" + k.rules.name + " on the kubelet at " + k.url
}

func (k *kubeletPodCheck) Check(ctx context.Context) error {
	if k.bad != nil {
		return k.bad
	}
	return settle(k.check(ctx))
}

func (k *kubeletPodCheck) check(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.podsURL, nil)
	if err != nil {
		return Permanent(fmt.Errorf("%s: %w", k.Name(), err))
	}
	req.Header.Set("Accept", "application/json")
	var resp *http.Response
	if perr := protect(k.Name()+": the *http.Client's transport", func() error {
		resp, err = k.c.Do(req)
		return nil
	}); perr != nil {
		return perr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", k.Name(), classifyHTTP(err))
	}
	body, readErr := io.ReadAll(io.LimitReader(resp.Body, MaxKubeletPodsBytes+1))
	_ = resp.Body.Close()
	switch {
	case readErr != nil:
		return fmt.Errorf("%s: GET /pods: HTTP %d, reading the body: %w", k.Name(), resp.StatusCode, readErr)
	case resp.StatusCode != http.StatusOK:
		return k.statusError(resp.StatusCode, body)
	case len(body) > MaxKubeletPodsBytes:
		return fmt.Errorf("%s: GET /pods: the answer is longer than MaxKubeletPodsBytes (%d)", k.Name(), MaxKubeletPodsBytes)
	}
	var list corev1.PodList
	if err := json.Unmarshal(body, &list); err != nil {
		return fmt.Errorf("%s: GET /pods: not a PodList: %w", k.Name(), err)
	}
	var found []*corev1.Pod
	for i := range list.Items {
		if pod := &list.Items[i]; pod.Namespace == k.rules.ns && pod.Name == k.rules.name {
			found = append(found, pod)
		}
	}
	switch len(found) {
	case 0:
		return fmt.Errorf("%s: not found among the %d pods the kubelet runs", k.Name(), len(list.Items))
	case 1:
	default:
		return fmt.Errorf("%s: the kubelet lists %d pods of that name", k.Name(), len(found))
	}
	var problems []string
	if src := found[0].Annotations[configSourceAnnotation]; src == "" || src == "api" {
		problems = append(problems, fmt.Sprintf("not a static pod (%s is %q)", configSourceAnnotation, src))
	}
	problems = append(problems, k.rules.judge(found[0])...)
	if len(problems) > 0 {
		return fmt.Errorf("%s: %s", k.Name(), strings.Join(problems, "; "))
	}
	return nil
}

// statusError is the failure for a non-200 answer to GET /pods.
func (k *kubeletPodCheck) statusError(code int, body []byte) error {
	text := snippet(body, 200)
	if kind := classifyHTTPStatus(code); kind != nil {
		return fmt.Errorf("%s: GET /pods: HTTP %d: %w: %s (%s)", k.Name(), code, kind, text, kubeletAccessHint)
	}
	if code == http.StatusInternalServerError && strings.HasPrefix(text, "Authorization error") {
		return fmt.Errorf("%s: GET /pods: HTTP %d: %s (the kubelet could not ask the apiserver and had no cached decision for this caller)", k.Name(), code, text)
	}
	return fmt.Errorf("%s: GET /pods: HTTP %d: %s", k.Name(), code, text)
}

// kubeletAccessHint says what a 401/403 from a kubelet means.
const kubeletAccessHint = "the kubelet wants a client certificate from its client CA or a bearer token, and get on nodes/pods (nodes/proxy before Kubernetes 1.33)"
