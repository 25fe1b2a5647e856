package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	kubeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	fakeremote "k8s.io/cri-client/pkg/fake"
)

// Container environment variables the fake runtime reads at CreateContainer:
// a container that sets EnvExitCode exits with that code once it has run for
// EnvExitAfter (a Go duration, default 0). Without them a container runs
// until the kubelet stops it, as kubemark's do. testenv.FakeExit writes them.
const (
	EnvExitCode  = "KUBEBOOT_FAKE_EXIT_CODE"
	EnvExitAfter = "KUBEBOOT_FAKE_EXIT_AFTER"
)

// fakeImageSize is what every fake image reports: the CRI client rejects an
// image of size 0 ("Id or size of image is not set"), kubemark's default.
const fakeImageSize = 10 << 20

// exitSpec is when and how a fake container ends.
type exitSpec struct {
	code  int32
	after time.Duration
}

// runtime is kubemark's fake CRI runtime (k8s.io/cri-client/pkg/fake) served
// over gRPC on a unix socket, extended so a container can exit by itself.
type runtime struct {
	*fakeremote.RemoteRuntime
	server *grpc.Server

	mu     sync.Mutex
	exits  map[string]exitSpec
	timers map[string]*time.Timer
}

func newRuntime() *runtime {
	r := &runtime{
		RemoteRuntime: fakeremote.NewFakeRemoteRuntime(),
		server:        grpc.NewServer(),
		exits:         map[string]exitSpec{},
		timers:        map[string]*time.Timer{},
	}
	r.ImageService.SetFakeImageSize(fakeImageSize)
	r.RuntimeService.FakeStatus = &kubeapi.RuntimeStatus{Conditions: []*kubeapi.RuntimeCondition{
		{Type: kubeapi.RuntimeReady, Status: true},
		{Type: kubeapi.NetworkReady, Status: true},
	}}
	kubeapi.RegisterRuntimeServiceServer(r.server, r)
	kubeapi.RegisterImageServiceServer(r.server, r)
	return r
}

// serve listens on the unix socket path (removing a stale one left by a
// killed predecessor) and serves until stop.
func (r *runtime) serve(path string) error {
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("fake runtime: listen on %s: %w", path, err)
	}
	go func() { _ = r.server.Serve(l) }()
	go r.trimCallLogs()
	return nil
}

func (r *runtime) stop() { r.server.Stop() }

// trimCallLogs empties the fakes' call logs now and then: they record every
// call and would otherwise grow for as long as the node runs.
func (r *runtime) trimCallLogs() {
	for range time.Tick(time.Minute) {
		r.RuntimeService.Lock()
		r.RuntimeService.Called = nil
		r.RuntimeService.Unlock()
		r.ImageService.Lock()
		r.ImageService.Called = nil
		r.ImageService.Unlock()
	}
}

// CreateContainer creates the fake container and remembers when it is to
// exit, from its environment.
func (r *runtime) CreateContainer(ctx context.Context, req *kubeapi.CreateContainerRequest) (*kubeapi.CreateContainerResponse, error) {
	spec, ok, err := exitFromEnv(req.GetConfig().GetEnvs())
	if err != nil {
		return nil, err
	}
	resp, err := r.RemoteRuntime.CreateContainer(ctx, req)
	if err != nil || !ok {
		return resp, err
	}
	r.mu.Lock()
	r.exits[resp.ContainerId] = spec
	r.mu.Unlock()
	return resp, nil
}

// StartContainer starts the fake container and, if it is to exit, arms a
// timer that marks it exited with its code.
func (r *runtime) StartContainer(ctx context.Context, req *kubeapi.StartContainerRequest) (*kubeapi.StartContainerResponse, error) {
	resp, err := r.RemoteRuntime.StartContainer(ctx, req)
	if err != nil {
		return resp, err
	}
	id := req.ContainerId
	r.mu.Lock()
	defer r.mu.Unlock()
	if spec, ok := r.exits[id]; ok {
		delete(r.exits, id)
		r.timers[id] = time.AfterFunc(spec.after, func() { r.exit(id, spec.code) })
	}
	return resp, nil
}

// RemoveContainer removes the fake container and forgets its exit.
func (r *runtime) RemoveContainer(ctx context.Context, req *kubeapi.RemoveContainerRequest) (*kubeapi.RemoveContainerResponse, error) {
	r.mu.Lock()
	delete(r.exits, req.ContainerId)
	if t := r.timers[req.ContainerId]; t != nil {
		t.Stop()
		delete(r.timers, req.ContainerId)
	}
	r.mu.Unlock()
	return r.RemoteRuntime.RemoveContainer(ctx, req)
}

// exit marks a running container exited, as a process that ended would be;
// the kubelet's PLEG sees it on its next relist.
func (r *runtime) exit(id string, code int32) {
	r.mu.Lock()
	delete(r.timers, id)
	r.mu.Unlock()
	rs := r.RuntimeService
	rs.Lock()
	defer rs.Unlock()
	c, ok := rs.Containers[id]
	if !ok || c.State != kubeapi.ContainerState_CONTAINER_RUNNING {
		return
	}
	c.State = kubeapi.ContainerState_CONTAINER_EXITED
	c.ExitCode = code
	c.FinishedAt = time.Now().UnixNano()
	c.Reason = "Completed"
	if code != 0 {
		c.Reason = "Error"
	}
}

func exitFromEnv(envs []*kubeapi.KeyValue) (exitSpec, bool, error) {
	var spec exitSpec
	var found bool
	for _, kv := range envs {
		switch kv.GetKey() {
		case EnvExitCode:
			n, err := strconv.ParseInt(string(kv.GetValue()), 10, 32)
			if err != nil {
				return spec, false, fmt.Errorf("fake runtime: %s=%q: %w", EnvExitCode, string(kv.GetValue()), err)
			}
			spec.code, found = int32(n), true
		case EnvExitAfter:
			d, err := time.ParseDuration(string(kv.GetValue()))
			if err != nil {
				return spec, false, fmt.Errorf("fake runtime: %s=%q: %w", EnvExitAfter, string(kv.GetValue()), err)
			}
			spec.after = d
		}
	}
	return spec, found, nil
}
