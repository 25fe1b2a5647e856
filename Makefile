# kubeboot: the two commands a user needs are `make test` and
# `go run ./examples/controlplane`.

GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.7.0
TEST_FLAGS  ?=

.PHONY: test lint binaries kube-apiserver bench fuzz

# test builds (first run on 2 cores: kube-apiserver ~5 min, then
# kube-controller-manager, kube-scheduler and hollow-kubelet ~1.5 min more)
# or finds the real Kubernetes binaries, exports their paths, then runs every
# test against real servers with the race detector.
test:
	@env="$$($(GO) run ./internal/testenv/cmd/binaries)" && echo "$$env" && eval "$$env" && \
	$(GO) test -race -count=1 -timeout 30m $(TEST_FLAGS) ./...

# binaries prints `export KUBEBOOT_...=path` for every Kubernetes binary the
# tests run, building any that is not cached yet:
#   eval "$(make -s binaries)"
binaries:
	@$(GO) run ./internal/testenv/cmd/binaries

# kube-apiserver prints the path of the cached binary, building it if needed.
kube-apiserver:
	@$(GO) run ./internal/testenv/cmd/kube-apiserver

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
