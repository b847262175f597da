# netweave: the few verbs a newcomer needs.
#   make run    start the whole gateway locally (Redis, static adapter, core, Envoy)
#   make stop   stop a stack `make run` left running (e.g. in another terminal)
#   make test   install what is missing, lint, type-check and run the tests
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STATE := .netweave
TOOLS := $(STATE)/tools
BUF := $(TOOLS)/node_modules/.bin/buf
BUF_VERSION := 1.75.0
# checkov (the manifests' and Dockerfile's security checks, tests/deployments/test_checkov.py)
# lives in a virtualenv of its own: its many dependencies must not move the project's pins.
CHECKOV_VENV := $(STATE)/checkov-venv
CHECKOV_VERSION := 3.3.30
GEN := gen/python
DESCRIPTOR := gen/o2ims.pb
THIRD_PARTY := build/third_party/proto
OPENAPI := rest_facade/openapi/o2ims.json
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
PROTOS := $(shell find proto -name '*.proto' | sort)
# Debian packages the tests and `make run` need on a fresh machine.
# gcc + libc6-dev build the Envoy edge's modules (envoy/modules/: REST shaper, per-source limit).
# prometheus brings promtool, which checks and unit-tests deployments/monitoring/ (tests/monitoring/).
DEB_PACKAGES := redis-server nghttp2-client gcc libc6-dev prometheus-alertmanager prometheus
# kubectl (for `kubectl kustomize` in the manifest tests): Debian's kubernetes-client, unless
# a kubectl is already installed (a newer one from a cloud SDK is kept).

.PHONY: help run stop kubesim test lint typecheck pytest gen openapi venv system-deps tools clean client-cert token checkov

help:
	@echo "make run    start the gateway locally (see README.md)"
	@echo "make stop   stop a stack make run left running"
	@echo "make kubesim  a simulated Kubernetes cluster for NETWEAVE_KUBECONFIG (see README.md)"
	@echo "make test   lint, type-check and test (installs what is missing)"
	@echo "make checkov  install checkov in $(CHECKOV_VENV) (make test does; tests/deployments runs it)"
	@echo "make gen    regenerate code and the descriptor set from proto/"
	@echo "make openapi regenerate $(OPENAPI) from proto/ (commit it; a test checks it)"
	@echo "make client-cert NAME=smo-north   issue a dev client certificate (mTLS)"
	@echo "make token NAME=smo-north ROLE=o2ims-reader   mint a dev bearer token"

## --- environment -----------------------------------------------------------

system-deps: $(STATE)/system-deps.stamp
$(STATE)/system-deps.stamp:
	@mkdir -p $(STATE)
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v kubectl >/dev/null 2>&1 || missing="$$missing kubernetes-client"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to install:$$missing" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@touch $@

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	@# Put the project and the generated code on the venv's import path.
	@$(PY) -c 'import sysconfig,pathlib; p=pathlib.Path(sysconfig.get_paths()["purelib"])/"netweave.pth"; p.write_text("$(CURDIR)\n$(CURDIR)/$(GEN)\n")'
	@touch $@

checkov: $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)
$(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION):
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q --disable-pip-version-check checkov==$(CHECKOV_VERSION)
	@touch $@

tools: $(BUF)
$(BUF):
	@mkdir -p $(TOOLS)
	cd $(TOOLS) && npm install --no-audit --no-fund --silent --prefix . @bufbuild/buf@$(BUF_VERSION) 2>&1 | grep -v 'Unknown user config' || true
	@test -x $(BUF)

## --- code generation (proto/ is the one source of truth) --------------------

gen: $(GEN)/.stamp
$(GEN)/.stamp: $(PROTOS) $(VENV)/.installed
	@rm -rf gen $(THIRD_PARTY) && mkdir -p $(GEN) $(THIRD_PARTY)/google/api $(THIRD_PARTY)/google/rpc
	@site=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	cp $$site/google/api/annotations.proto $$site/google/api/http.proto $(THIRD_PARTY)/google/api/; \
	cp $$site/google/rpc/status.proto $$site/google/rpc/error_details.proto $(THIRD_PARTY)/google/rpc/
	$(PY) -m grpc_tools.protoc -Iproto -I$(THIRD_PARTY) \
	  --python_out=$(GEN) --grpc_python_out=$(GEN) \
	  --mypy_out=$(GEN) --mypy_grpc_out=$(GEN) $(PROTOS)
	@# Envoy's transcoder needs every import, including google/rpc for error details.
	$(PY) -m grpc_tools.protoc -Iproto -I$(THIRD_PARTY) --include_imports --include_source_info \
	  --descriptor_set_out=$(DESCRIPTOR) $(PROTOS) $(THIRD_PARTY)/google/rpc/status.proto $(THIRD_PARTY)/google/rpc/error_details.proto
	@find $(GEN)/o2ims -type d -exec touch {}/__init__.py \;
	@touch $(GEN)/py.typed $@

openapi: gen
	$(PY) -m rest_facade.openapi --descriptor $(DESCRIPTOR) --out $(OPENAPI)

## --- the two commands -------------------------------------------------------

run: system-deps gen
	$(PY) -m devstack

# A simulated Kubernetes cluster to try the Kubernetes adapter without one (see README):
#   make kubesim            then, in another terminal:
#   NETWEAVE_KUBECONFIG=.netweave/kubesim/kubeconfig make run
kubesim: venv gen
	$(PY) -m devstack.kubesim --state-dir $(STATE)/kubesim --kubeconfig $(STATE)/kubesim/kubeconfig \
	  --nodes $(or $(NODES),50) --zones $(or $(ZONES),3) --heartbeat-interval 10

# No prerequisites: stopping must not wait for (or fail on) an install.
stop:
	@$(PY) -m devstack stop

# Development credentials for `make run` (dev CA in .netweave/pki, dev issuer in .netweave/pki/jwt).
client-cert: venv
	@test -n "$(NAME)" || { echo "usage: make client-cert NAME=smo-north [DAYS=365]" >&2; exit 2; }
	$(PY) -m devstack.pki --dir .netweave/pki issue-client $(NAME) --days $(or $(DAYS),365)

token: venv
	@test -n "$(NAME)" || { echo "usage: make token NAME=smo-north ROLE=o2ims-reader [TTL=3600]" >&2; exit 2; }
	@$(PY) -m devstack.tokens --dir .netweave/pki/jwt mint $(NAME) $(foreach r,$(ROLE),--role $(r)) --ttl $(or $(TTL),3600)

lint: gen tools
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(BUF) lint

typecheck: gen
	$(VENV)/bin/mypy

# Two workers, each taking whole modules (module-scoped stacks stay in one process): most of
# the suite waits on real processes, so two run in about half the time of one.
PYTEST_WORKERS ?= 2
pytest: system-deps gen checkov
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test: lint typecheck pytest

clean:
	rm -rf gen build $(VENV) .mypy_cache .ruff_cache .pytest_cache
