# airloop — developer entry points. `make demo` and `make test` are all a newcomer needs.
SHELL := /bin/bash
VENVS ?= .venvs
PROJECT ?= churn

.PHONY: help bootstrap up down status demo test test-control test-runtime test-e2e bench schema docs lint-imports clean

help:
	@echo "make demo   - install what is missing, start the platform, run the whole loop on '$(PROJECT)'"
	@echo "make test   - run the test suite (control, runtime, platform and end-to-end tiers)"
	@echo "make up/down/status - start, stop, inspect the local platform"
	@echo "make bench  - side-by-side benchmarks into benchmarks/results/"

bootstrap:
	@bash scripts/bootstrap.sh

up: bootstrap
	@$(VENVS)/control/bin/airloop up

down:
	@$(VENVS)/control/bin/airloop down

status:
	@$(VENVS)/control/bin/airloop status

demo: bootstrap
	@$(VENVS)/control/bin/airloop up
	@$(VENVS)/runtime/bin/airloop demo --project $(PROJECT)

test: bootstrap
	@bash scripts/test.sh

bench: bootstrap
	@bash scripts/bench.sh

# The project spec's JSON schema is generated from the pydantic models (airloop.core.spec).
schema:
	@$(VENVS)/control/bin/python -m airloop.core.spec > include/airloop/core/schemas/project.schema.json

# Generated reference pages (a control test fails when they are stale).
docs: schema
	@$(VENVS)/control/bin/python -m airloop.core.settings > docs/settings.md

# The plane contracts ([tool.importlinter] in pyproject.toml); also run by the control tier.
lint-imports:
	@PYTHONPATH=plugins $(VENVS)/control/bin/lint-imports --no-cache

clean:
	-@$(VENVS)/control/bin/airloop down
	rm -rf .airloop
