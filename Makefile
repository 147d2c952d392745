# The two commands a newcomer needs: `make run` and `make test`. Everything else is a helper of those.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
# Console scripts (llm-devstack, kafka-consumer-groups, ...) resolve from the venv in every recipe.
export PATH := $(BIN):$(PATH)

.PHONY: install run stop test check lint format typecheck stack-up stack-down stack-status provision bench clean

# The service (editable, with its test and dev extras) and, from dev/, the development tools that a
# production install never gets: llm-devstack, the emulator, the kafka-* wrappers (docs/deploy.md).
# Two pip runs: upgrading a venv made before the split (whose llm-service owned those scripts) would
# otherwise remove them again.
$(VENV)/.installed: setup.cfg setup.py pyproject.toml dev/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,dev]'
	$(BIN)/pip install -q -e ./dev
	touch $@

install: $(VENV)/.installed

## Kafka jars and the S3 server binary into ~/.cache/llm-service (first use only).
provision: install
	llm-devstack provision

EXAMPLE_PROMPT ?= Перескажи документ в двух-трёх предложениях.
# Every recipe line that talks to the service first points the shell at the local stack.
STACK_ENV = eval "$$(llm-devstack env)"

## Set up everything, start the stack and the service, submit the example tasks, show results and status.
run: install
	llm-devstack up
	llm-devstack service start
	$(STACK_ENV) && llmctl submit examples/docs --prompt "$(EXAMPLE_PROMPT)" --wait --timeout 300
	$(STACK_ENV) && llmctl status
	@echo
	@echo 'The service keeps running. Point a shell at it: eval "$$(llm-devstack env)"; stop it: make stop'

## Stop the service and the stack.
stop: install
	llm-devstack down

stack-up: install
	llm-devstack up

stack-down: install
	llm-devstack down

stack-status: install
	llm-devstack status

## The whole suite, on a private stack the tests start and stop themselves.
test: provision
	pytest

## The benchmark, side by side with hand-written loops, in one run (about 30 min on 2 cores; 15 with
## BENCH_ARGS=--seconds=6; run it on an otherwise idle machine): writes docs/performance.md, its plots
## and JSON under docs/performance/.
BENCH_ARGS ?=
bench: provision
	python -m bench.run $(BENCH_ARGS)

lint: install
	ruff check .
	ruff format --check .
	hadolint Dockerfile

format: install
	ruff format .
	ruff check --fix .

typecheck: install
	mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
