# kubeboot: the two commands a user needs are `make test` and
# `go run ./examples/controlplane`.

GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.7.0
TEST_FLAGS  ?=

.PHONY: test lint kube-apiserver bench

# test builds (first run, ~5 min) or finds the real kube-apiserver, then runs
# every test against real servers with the race detector.
test:
	@bin="$${KUBEBOOT_KUBE_APISERVER:-$$($(GO) run ./internal/testenv/cmd/kube-apiserver)}" && \
	echo "kube-apiserver: $$bin" && \
	KUBEBOOT_KUBE_APISERVER="$$bin" $(GO) test -race -count=1 -timeout 30m $(TEST_FLAGS) ./...

# kube-apiserver prints the path of the cached binary, building it if needed.
kube-apiserver:
	@$(GO) run ./internal/testenv/cmd/kube-apiserver

lint:
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

bench:
	@bin="$${KUBEBOOT_KUBE_APISERVER:-$$($(GO) run ./internal/testenv/cmd/kube-apiserver)}" && \
	KUBEBOOT_KUBE_APISERVER="$$bin" $(GO) test -run '^$$' -bench . -benchmem -count 5 -timeout 60m ./...
