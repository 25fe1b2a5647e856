//go:build !kubeboot_k8s_1_35

package main

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
	internalapi "k8s.io/cri-api/pkg/apis"
	remote "k8s.io/cri-client/pkg"
)

// criClients connects the kubelet's CRI clients to the fake runtime at
// endpoint. cri-client v0.36 and newer take a context and a streaming
// switch; cri_1_35.go is the v0.35 form (internal/testenv builds each
// Kubernetes minor with the tag kubeboot_k8s_1_<minor>).
func criClients(ctx context.Context, endpoint string) (internalapi.RuntimeService, internalapi.ImageManagerService, error) {
	runtimeService, err := remote.NewRemoteRuntimeService(ctx, endpoint, 15*time.Second, noop.NewTracerProvider(), false)
	if err != nil {
		return nil, nil, fmt.Errorf("fake runtime client: %w", err)
	}
	imageService, err := remote.NewRemoteImageService(ctx, endpoint, 15*time.Second, noop.NewTracerProvider(), false)
	if err != nil {
		return nil, nil, fmt.Errorf("fake image client: %w", err)
	}
	return runtimeService, imageService, nil
}
