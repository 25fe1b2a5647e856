# kubeboot: the two commands a user needs are `make test` and
# `go run ./examples/controlplane`.

GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.7.0
TEST_FLAGS  ?=
BINARIES    := $(GO) run ./internal/testenv/cmd/binaries

# The packages whose tests talk to a kube-apiserver: `make test-compat` runs
# them against every supported Kubernetes version besides the default.
APISERVER_PKGS ?= ./readiness/ ./apiserverdisco/ ./cnibootstrap/ ./examples/...
# The versions test-compat runs: every supported one but the selected
# (default) one, from internal/testenv's version table.
COMPAT_VERSIONS ?= $(shell $(BINARIES) -other-versions)
# Variables naming prebuilt binaries of one version, cleared before a run
# at another.
BINARY_VARS := KUBEBOOT_KUBE_APISERVER KUBEBOOT_KUBE_CONTROLLER_MANAGER KUBEBOOT_KUBE_SCHEDULER KUBEBOOT_HOLLOW_KUBELET
# The packages whose tests run etcd servers: `make test-etcd37` runs them
# with every member an etcd v3.7.3 process (readiness: its etcd tests only).
ETCD_VERSION ?= v3.7.3

.PHONY: test test-compat test-etcd37 compat-clients importer-footprint ci \
	lint binaries kube-apiserver k8s-tools-modules bench fuzz

# test builds (first run on 2 cores: kube-apiserver ~5 min, then
# kube-controller-manager, kube-scheduler and hollow-kubelet ~1.5 min more,
# and kube-apiserver of the other supported versions for
# TestAPIServerVersions) or finds the real Kubernetes binaries of the default
# version (KUBEBOOT_KUBERNETES_VERSION selects another), exports their paths,
# then runs every test against real servers with the race detector.
test:
	@env="$$($(BINARIES) -all-apiservers)" && echo "$$env" && eval "$$env" && \
	$(GO) test -race -count=1 -timeout 30m $(TEST_FLAGS) ./...

# test-compat runs the apiserver-facing packages against each other
# supported Kubernetes version (node components included: nodes always run
# the apiserver's version).
test-compat:
	@status=0; for v in $(COMPAT_VERSIONS); do \
		echo "== Kubernetes $$v: $(APISERVER_PKGS)"; \
		( unset $(BINARY_VARS); \
		env="$$(KUBEBOOT_KUBERNETES_VERSION=$$v $(BINARIES))" && echo "$$env" && eval "$$env" && \
		$(GO) test -race -count=1 -timeout 30m $(TEST_FLAGS) $(APISERVER_PKGS) ) || status=1; \
	done; exit $$status

# test-etcd37 runs the etcd-facing acceptance tests with every etcd member an
# etcd $(ETCD_VERSION) process instead of the embedded v3.6 server.
test-etcd37:
	@env="$$(KUBEBOOT_ETCD_VERSION=$(ETCD_VERSION) $(BINARIES))" && echo "$$env" && eval "$$env" && \
	status=0; \
	$(GO) test -race -count=1 -timeout 30m $(TEST_FLAGS) ./etcdmember/ ./apiserverdisco/ || status=1; \
	$(GO) test -race -count=1 -timeout 30m $(TEST_FLAGS) -run Etcd ./readiness/ || status=1; \
	exit $$status

# compat-clients builds, vets and runs the server-free tests against every
# supported client-go and etcd client minor, and builds with Go 1.27.
compat-clients:
	@bash .ci/compat-clients

# importer-footprint lists what adding kubeboot changes in a
# Kubernetes-1.35-era go.mod (nothing, or the README says why).
importer-footprint:
	@bash .ci/importer-footprint

# ci is what .ci/run runs.
ci: lint test test-compat test-etcd37 compat-clients importer-footprint

# binaries prints `export KUBEBOOT_...=path` for every Kubernetes binary the
# tests run, building any that is not cached yet:
#   eval "$(make -s binaries)"
binaries:
	@$(BINARIES)

# kube-apiserver prints the path of the cached binary, building it if needed.
kube-apiserver:
	@$(GO) run ./internal/testenv/cmd/kube-apiserver

# k8s-tools-modules regenerates internal/testenv/apiserverbuild/v1.<minor>/go.mod
# and go.sum for each supported version from that version's k8s.io/kubernetes
# go.mod (after a patch release: change the version here and in testenv's table).
K8S_VERSIONS ?= v1.37.2 v1.36.3 v1.35.4
k8s-tools-modules:
	@for v in $(K8S_VERSIONS); do $(GO) run ./internal/testenv/cmd/k8s-tools-module $$v || exit 1; done

lint:
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

bench:
	@env="$$($(GO) run ./internal/testenv/cmd/binaries)" && eval "$$env" && \
	$(GO) test -run '^$$' -bench . -benchmem -count 5 -timeout 60m ./...

# fuzz runs every Fuzz* target in the repository for FUZZTIME each, one at a
# time (go test -fuzz takes one target per run); new targets are found by
# grep, so nothing here lists them.
FUZZTIME ?= 30s
fuzz:
	@env="$$($(GO) run ./internal/testenv/cmd/binaries)" && eval "$$env" && \
	for f in $$(git ls-files '*_test.go' | xargs grep -lE '^func Fuzz[A-Za-z0-9_]*\(' ); do \
		for name in $$(grep -oE '^func Fuzz[A-Za-z0-9_]*' $$f | sed 's/^func //'); do \
			echo "== $$name (./$$(dirname $$f), $(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) ./$$(dirname $$f) || exit 1; \
		done; \
	done
