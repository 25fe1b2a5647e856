//go:build kubeboot_k8s_1_35

package main

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
	internalapi "k8s.io/cri-api/pkg/apis"
	remote "k8s.io/cri-client/pkg"
	"k8s.io/klog/v2"
)

// criClients is cri.go's for Kubernetes 1.35, whose cri-client (v0.35)
// takes a logger instead of a context and has no streaming switch.
func criClients(ctx context.Context, endpoint string) (internalapi.RuntimeService, internalapi.ImageManagerService, error) {
	logger := klog.FromContext(ctx)
	runtimeService, err := remote.NewRemoteRuntimeService(endpoint, 15*time.Second, noop.NewTracerProvider(), &logger)
	if err != nil {
		return nil, nil, fmt.Errorf("fake runtime client: %w", err)
	}
	imageService, err := remote.NewRemoteImageService(endpoint, 15*time.Second, noop.NewTracerProvider(), &logger)
	if err != nil {
		return nil, nil, fmt.Errorf("fake image client: %w", err)
	}
	return runtimeService, imageService, nil
}
