# Building the Lambda functions (included by the Makefile).
#
# Every directory functions/<name>/ with a main.go is a function. Its logical
# id in template.yaml is <name> in CamelCase (client-discovery →
# ClientDiscovery); `sam build` runs `make build-<LogicalId>` with
# ARTIFACTS_DIR set (Metadata BuildMethod: makefile), and the rule below is
# generated for every directory, so a new function needs no edit here.
#
#   make build       every function for linux/arm64 into bin/<name>/bootstrap
#   make build-host  every function for this machine into bin/host/<name>
#   make deploy      sam build && sam deploy (samconfig.toml)

FUNCTION_DIRS := $(sort $(patsubst functions/%/main.go,%,$(wildcard functions/*/main.go)))

LAMBDA_GOFLAGS := -tags lambda.norpc -trimpath -ldflags='-s -w'
LAMBDA_ENV := GOOS=linux GOARCH=arm64 CGO_ENABLED=0

# $(call camel,client-discovery) → ClientDiscovery. Make has no upper-case
# function, so each word's first letter is swapped by 26 patsubsts.
_upper_first = $(foreach w,$(1),$(patsubst a%,A%,$(patsubst b%,B%,$(patsubst c%,C%,$(patsubst d%,D%,$(patsubst e%,E%,$(patsubst f%,F%,$(patsubst g%,G%,$(patsubst h%,H%,$(patsubst i%,I%,$(patsubst j%,J%,$(patsubst k%,K%,$(patsubst l%,L%,$(patsubst m%,M%,$(patsubst n%,N%,$(patsubst o%,O%,$(patsubst p%,P%,$(patsubst q%,Q%,$(patsubst r%,R%,$(patsubst s%,S%,$(patsubst t%,T%,$(patsubst u%,U%,$(patsubst v%,V%,$(patsubst w%,W%,$(patsubst x%,X%,$(patsubst y%,Y%,$(patsubst z%,Z%,$(w))))))))))))))))))))))))))))
_empty :=
_space := $(_empty) $(_empty)
camel = $(subst $(_space),,$(strip $(call _upper_first,$(subst -, ,$(1)))))

FUNCTION_NAMES := $(foreach d,$(FUNCTION_DIRS),$(call camel,$(d)))

# build-<LogicalId>: what `sam build` calls for one function.
define function_rule
.PHONY: build-$(call camel,$(1))
build-$(call camel,$(1)):
	@test -n "$$(ARTIFACTS_DIR)" || { echo "build-$(call camel,$(1)): ARTIFACTS_DIR is not set (sam build sets it)" >&2; exit 1; }
	$$(LAMBDA_ENV) $$(GO) build $$(LAMBDA_GOFLAGS) -o $$(ARTIFACTS_DIR)/bootstrap ./functions/$(1)
endef
$(foreach d,$(FUNCTION_DIRS),$(eval $(call function_rule,$(d))))

.PHONY: build build-host deploy list-functions

build: $(foreach d,$(FUNCTION_DIRS),bin/$(d)/bootstrap)
	@ls -l $^

# Always handed to go build, which knows from its cache whether anything changed.
bin/%/bootstrap: FORCE
	$(LAMBDA_ENV) $(GO) build $(LAMBDA_GOFLAGS) -o $@ ./functions/$*

build-host: $(foreach d,$(FUNCTION_DIRS),bin/host/$(d))

# Same flags as the Lambda build (so cold starts compare), for this OS/CPU.
bin/host/%: FORCE
	CGO_ENABLED=0 $(GO) build $(LAMBDA_GOFLAGS) -o $@ ./functions/$*

.PHONY: FORCE
FORCE:

list-functions:
	@for n in $(FUNCTION_NAMES); do echo $$n; done

deploy:
	@command -v sam >/dev/null 2>&1 || { \
		echo "deploy: the AWS SAM CLI (sam) is not installed."; \
		echo "  Install it (https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/install-sam-cli.html),"; \
		echo "  set ServerName in samconfig.toml (parameter_overrides) and run make deploy again."; \
		exit 1; }
	sam build && sam deploy
