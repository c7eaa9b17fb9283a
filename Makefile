# DICT Redis cache layer. Every target installs what it needs and is safe to re-run.
#   make local              the main job: dev stack on loopback + the full smoke suite and drill
#   make render STACK=dev   offline render of a stack
#   make rehearsal          the dev stack as real redis-server/redis-sentinel processes on loopback
#   make test               the whole test suite (what CI runs)
#   make policy STACK=dev   the policy pack over every resource of a stack (no CLI)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STACK ?= dev
# Binaries the tests run for real, and the Debian packages that provide them.
SYSTEM_BINARIES := redis-server redis-sentinel redis-cli redis-check-rdb busybox promtool prometheus-redis-exporter
SYSTEM_PACKAGES := redis-server redis-sentinel redis-tools busybox prometheus prometheus-redis-exporter

.PHONY: deps system-deps python-deps render rehearsal local test lint clean policy drill-backup

deps: system-deps python-deps

# Installs the Debian packages only when a binary is missing. The packages may start system
# daemons; they are stopped again, since the tests start their own processes.
system-deps:
	@missing=""; \
	for bin in $(SYSTEM_BINARIES); do command -v $$bin >/dev/null || missing="$$missing $$bin"; done; \
	if ! $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null; then missing="$$missing python3-venv"; fi; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages for:$$missing"; \
		apt-get update -qq; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			$(SYSTEM_PACKAGES) python3 python3-venv >/dev/null; \
		for svc in redis-server redis-sentinel prometheus prometheus-redis-exporter; do \
			service $$svc stop >/dev/null 2>&1 || true; done; \
	fi

python-deps: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt smoke/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

render: python-deps
	$(PY) -m smoke.local.render --stack $(STACK)

# The dev stack's rendered files as real processes on loopback, up until Ctrl-C.
rehearsal: deps
	$(PY) -m smoke.local.render --stack dev
	$(PY) -m smoke.local.rehearsal --render-dir build/render/dev/k8s

# The main job: render dev, start it on loopback, run every smoke check and the failover drill,
# write build/smoke-report.json, stop everything; non-zero exit on any failed check.
local: deps
	$(PY) -m smoke.local.render --stack dev
	$(PY) -m smoke local --render-dir build/render/dev/k8s --report build/smoke-report.json

# The backup drill: full cluster loss on loopback, restored from a backup in moto's S3; writes
# build/drill-backup.json. tests/test_backup_drill.py runs the same drill in `make test`.
drill-backup: deps
	$(PY) -m smoke.local.render --stack dev
	$(PY) -m smoke.drills.backup --render-dir build/render/dev/k8s --report build/drill-backup.json

test: deps
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: python-deps
	$(PY) -m ruff check .

# The CrossGuard pack over every resource the real program registers under mocks, through the
# pack's own analyzer server; writes build/policy-$(STACK).json, fails on a mandatory violation.
policy: python-deps
	$(PY) -m policies.analyze --stack $(STACK)

clean:
	rm -rf build .pytest_cache .ruff_cache

# The benchmark (not part of `make test`): render dev, start it on loopback, measure every strategy
# operation against raw redis-py, memory, growth to 1M keys, concurrency and five failovers; print a
# table, write build/bench.json, stop everything. About 5 minutes; figures in docs/performance.md.
.PHONY: bench
bench: deps
	$(PY) -m smoke.local.render --stack dev
	$(PY) -m smoke.bench --render-dir build/render/dev/k8s --out build/bench.json
