# Cirrus — a serverless Matrix homeserver.
#   make run    a homeserver on http://127.0.0.1:8008 with the embedded store
#   make test   everything CI runs (starts and stops the local AWS stand-ins)
#   make bench  the benchmark harness (see BENCHMARKS.md)
#   make build  one bootstrap per Lambda function (linux/arm64), as sam build expects
#   make template  regenerate template.yaml from the route table and core/resources
#   make deploy sam deploy with samconfig.toml

# pdu/eventauth in mautrix need Go 1.27; the go command fetches this
# toolchain from the Go module proxy on first use.
export GOTOOLCHAIN := go1.27.3
export GOFLAGS := -buildvcs=false

GO ?= go
# goolm: mautrix-go's pure-Go olm, so the E2EE client tests need no C library.
TAGS := goolm
STANDINS := scripts/standins/standins.sh
STANDINS_RUN_DIR ?= $(CURDIR)/scripts/standins/.run
export STANDINS_RUN_DIR

.PHONY: run test unit vet fmt-check bench build deploy clean template

# The dev server: registration is open because it listens on loopback only.
run:
	CIRRUS_SERVER_NAME=$${CIRRUS_SERVER_NAME:-localhost:8008} \
	CIRRUS_REGISTRATION=$${CIRRUS_REGISTRATION:-open} \
	CIRRUS_DATA_DIR=$${CIRRUS_DATA_DIR:-./data} \
	$(GO) run ./functions/homeserver

test: fmt-check vet
	@set -e; \
	trap '$(STANDINS) stop' EXIT; \
	eval "$$($(STANDINS) start)"; \
	CIRRUS_BCRYPT_COST=4 $(GO) test -race -tags $(TAGS) -count=1 -timeout 30m ./...

unit:
	$(GO) test -tags $(TAGS) -count=1 ./...

vet:
	$(GO) vet -tags $(TAGS) ./...

fmt-check:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# template.yaml is generated (internal/samtemplate); run this after adding
# routes, functions, workers or resources. template_test.go fails while it is stale.
template:
	$(GO) run ./internal/samtemplate/gentemplate -o template.yaml

# The benchmark harness (bench/, figures in BENCHMARKS.md). It builds the
# functions and starts everything it measures itself (the all-in-one, the AWS
# stand-ins on free ports, each function), stopping them by PID however it
# ends. Options: make bench BENCH_FLAGS='-runs 1 -skip-aws' (go run ./bench -h).
bench:
	$(GO) run ./bench $(BENCH_FLAGS)

clean:
	rm -rf .aws-sam bin

-include build.mk
