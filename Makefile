# The project's vocabulary. Every target sets up what it needs: a clean clone needs nothing by hand.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The Lambda runtime is python3.13; pyenv ships one on this kind of machine. Fall back to python3.
# (pyenv's shim for python3.13 exists even when 3.13 is not selected, so ask pyenv for the real path.)
PYTHON_FOR_VENV ?= $(shell scripts/find_python.sh)
UV_VERSION := 0.13.8
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
SAM_VENV := .venv-sam
SAM := SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam
# In the Lambda runtime already, so never in the layer: botocore and its own dependencies.
RUNTIME_PACKAGES := botocore python-dateutil six

ROLE ?= patient
CLINIC ?= demo
PATIENTS ?=
SUB ?=
# make audit: the local stack (make run) unless LOCAL=0 (then your AWS credentials and region).
LOCAL ?= 1
STEPS ?= 10000
SEED ?= 7
TABLE ?= PaymentsTable-local
SECRETS_PREFIX ?= clinic-payments-local


.PHONY: audit help setup run token test test-stripe test-unit test-integration test-e2e lint typecheck validate build deploy bench lock clean soak openapi

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements/dev.lock
	@# A first setup stopped with Ctrl-C can leave a venv without pip: make it anew then.
	@$(PY) -m pip --version >/dev/null 2>&1 || { rm -rf $(VENV) && $(PYTHON_FOR_VENV) -m venv $(VENV); }
	@$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	@$(UV) pip sync --quiet --python $(PY) requirements/dev.lock
	@touch $@

$(SAM_VENV)/.installed: requirements/sam.lock
	@$(SAM_VENV)/bin/python -m pip --version >/dev/null 2>&1 || { rm -rf $(SAM_VENV) && $(PYTHON_FOR_VENV) -m venv $(SAM_VENV); }
	@$(SAM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	@$(SAM_VENV)/bin/uv pip sync --quiet --python $(SAM_VENV)/bin/python requirements/sam.lock
	@touch $@

setup: $(VENV)/.installed ## Create the development environment (.venv)

run: setup ## Serve the API locally: moto + localstripe + local gateway, seeded with a demo clinic; STRIPE=test: your own Stripe test account
	$(PY) -m local.run $(if $(filter command line,$(origin STRIPE)),--stripe "$(STRIPE)")

token: setup ## Print a local token: make token ROLE=patient CLINIC=demo PATIENTS=pat_1 [SUB=...]
	@$(PY) -m local.tokens --role "$(ROLE)" --clinic "$(CLINIC)" --patients "$(PATIENTS)" --sub "$(SUB)"

test: setup lint typecheck ## Lint, type-check, then unit -> integration -> e2e tests
	$(PY) -m pytest tests/unit
	$(PY) -m pytest tests/integration
	$(PY) -m pytest tests/e2e

# Not part of `make test`: it reaches api.stripe.com with your test-mode keys.
test-stripe: setup ## Money-path e2e tests against your Stripe test account (STRIPE_TEST_SECRET_KEY, STRIPE_TEST_PUBLISHABLE_KEY)
	@case "$$STRIPE_TEST_SECRET_KEY" in sk_test_?*) ;; *) echo "make test-stripe: set STRIPE_TEST_SECRET_KEY=sk_test_... (your Stripe test-mode secret key; live keys are refused)" >&2; exit 2;; esac
	@case "$$STRIPE_TEST_PUBLISHABLE_KEY" in pk_test_?*) ;; *) echo "make test-stripe: set STRIPE_TEST_PUBLISHABLE_KEY=pk_test_... (your Stripe test-mode publishable key; live keys are refused)" >&2; exit 2;; esac
	E2E_STRIPE=live $(PY) -m pytest tests/e2e/test_money_paths.py

test-unit: setup
	$(PY) -m pytest tests/unit
test-integration: setup
	$(PY) -m pytest tests/integration
test-e2e: setup
	$(PY) -m pytest tests/e2e

lint: setup ## ruff (lint + format check) and the import contracts
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	PYTHONPATH=layers/shared $(VENV)/bin/lint-imports --no-cache

typecheck: setup ## mypy strict on clinic_payments (Stripe calls checked against stripe.params) and the test fakes
	$(VENV)/bin/mypy
	MYPYPATH=layers/shared $(VENV)/bin/mypy --strict --config-file pyproject.toml tests/unit/fakes.py

openapi: setup ## Regenerate the OpenAPI document HealthFunction serves (after changing a route or a model)
	PYTHONPATH=layers/shared $(PY) scripts/write_openapi.py

validate: setup $(SAM_VENV)/.installed ## Prove template.yaml offline: SAM translator + cfn-lint, sam validate --lint
	$(PY) scripts/validate_template.py template.yaml
	$(SAM) validate --lint --template template.yaml --region us-east-1

build: $(SAM_VENV)/.installed ## sam build (offline; needs python3.13 on PATH)
	PATH="$$(dirname $(PYTHON_FOR_VENV)):$$PATH" $(SAM) build --template template.yaml

deploy: build ## sam deploy --guided
	$(SAM) deploy --guided

audit: setup ## Recompute every patient account of CLINIC and report differences (make audit CLINIC=demo)
	@test -n "$(CLINIC)" || (echo "usage: make audit CLINIC=<clinic id>"; exit 2)
	$(if $(filter 1,$(LOCAL)),AWS_ENDPOINT_URL=http://127.0.0.1:$${MOTO_PORT:-5000} AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1 STRIPE_API_BASE=http://127.0.0.1:$${STRIPE_PORT:-8420}) $(PY) scripts/audit.py --clinic "$(CLINIC)" --table "$(TABLE)" --secrets-prefix "$(SECRETS_PREFIX)"

bench: setup ## Benchmarks: figures and ratios measured side by side
	$(PY) -m bench

soak: setup ## Random money operations with faults, audited: make soak STEPS=10000 SEED=7
	$(PY) -m soak --steps $(STEPS) --seed $(SEED)

lock: setup ## Re-pin dependencies after editing requirements/*.in or layers/shared/requirements.in
	@# The Lambda runtime has botocore (aws-xray-sdk's dependency): the layer must not shadow it.
	$(UV) pip compile layers/shared/requirements.in --python-version 3.13 --python-platform aarch64-manylinux_2_28 -o layers/shared/requirements.txt --custom-compile-command "make lock" $(addprefix --no-emit-package ,$(RUNTIME_PACKAGES))
	$(UV) pip compile requirements/dev.in --python $(PY) -o requirements/dev.lock --generate-hashes
	$(UV) pip compile requirements/sam.in --python $(PY) -o requirements/sam.lock --generate-hashes

clean:
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache
