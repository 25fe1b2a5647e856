package main

import (
	"net/url"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kubeboot/kubeboot/internal/testenv"
)

// The static pods of a control-plane node, in kube-system; their mirror
// pods are <name>-<node>.
const (
	staticPodNamespace = "kube-system"
	etcdPodName        = "etcd"
	apiServerPodName   = "kube-apiserver"
	// generationAnnotation changes with every manifest an upgrade writes,
	// and with it the kubelet's config hash of the pod.
	generationAnnotation = "kubeboot.example/generation"
)

// mirrorPod is the name of node's mirror pod of the static pod name.
func mirrorPod(name, node string) string { return name + "-" + node }

// etcdManifest is the static pod of m's etcd: Ready while etcd's /health
// on m's client URL answers 200 (the hollow kubelet's fake runtime runs
// nothing; the probe reaches the real member).
func etcdManifest(m *testenv.Member) *corev1.Pod {
	u, _ := url.Parse(m.ClientURL)
	port, _ := strconv.Atoi(u.Port())
	return staticPod(etcdPodName, "registry.k8s.io/etcd:"+strings.TrimPrefix(m.Version(), "v")+"-0", 1,
		&corev1.HTTPGetAction{Host: "127.0.0.1", Port: intstr.FromInt(port), Path: "/health", Scheme: corev1.URISchemeHTTP})
}

// apiServerManifest is the static pod of a's kube-apiserver, generation
// gen: Ready while a's /readyz answers 200.
func apiServerManifest(a *testenv.APIServer, gen int) *corev1.Pod {
	return staticPod(apiServerPodName, "registry.k8s.io/kube-apiserver:"+a.KubernetesVersion(), gen,
		&corev1.HTTPGetAction{Host: "127.0.0.1", Port: intstr.FromInt(a.Port()), Path: "/readyz", Scheme: corev1.URISchemeHTTPS})
}

func staticPod(name, image string, gen int, probe *corev1.HTTPGetAction) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: staticPodNamespace,
			Labels:      map[string]string{"component": name, "tier": "control-plane"},
			Annotations: map[string]string{generationAnnotation: strconv.Itoa(gen)},
		},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name: name, Image: image,
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{HTTPGet: probe},
					PeriodSeconds: 1, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 1,
				},
			}},
			PriorityClassName:             "system-node-critical",
			TerminationGracePeriodSeconds: new(int64),
		},
	}
}
