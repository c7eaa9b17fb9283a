# DICT Redis cache layer. Every target installs what it needs and is safe to re-run.
# `make help` lists the targets (the `## ...` text on each target's line).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STACK ?= dev
# Binaries the tests run for real, and the Debian packages that provide them. Two server lines:
# Redis 7.0 (Debian's redis-*) and Valkey 8.0, the Redis 7.2 line production runs (valkey-*, from
# bookworm-backports on Debian 12; in the main suite of newer releases).
SYSTEM_BINARIES := redis-server redis-sentinel redis-cli redis-check-rdb busybox promtool prometheus-redis-exporter iptables
SYSTEM_PACKAGES := redis-server redis-sentinel redis-tools busybox prometheus prometheus-redis-exporter iptables
VALKEY_BINARIES := valkey-server valkey-sentinel valkey-cli valkey-check-rdb
VALKEY_PACKAGES := valkey-server valkey-sentinel valkey-tools
BACKPORTS_SOURCE := /etc/apt/sources.list.d/bookworm-backports.sources
# The server line the rehearsal targets (local, rehearsal, drill-backup, bench) and the tests'
# default line run: valkey (the default image's line) or redis. Tests marked both_server_lines
# run on both whatever this says.
SERVER ?= valkey
export REHEARSAL_SERVER_LINE := $(SERVER)

.PHONY: help deps system-deps python-deps render rehearsal local test lint clean policy drill-backup

help: ## this list: every target with one line
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /\1\t/' | awk -F'\t' '{ printf "  make %-14s %s\n", $$1, $$2 }'

deps: system-deps python-deps ## install everything the targets need (Debian packages, .venv)

# Installs the Debian packages only when a binary is missing. The packages may start system
# daemons; they are stopped again, since the tests start their own processes. On Debian 12 the
# Valkey packages come from bookworm-backports, added as a deb822 source the way Debian documents
# it (https://backports.debian.org/Instructions/); `-t bookworm-backports` takes only those
# packages from it.
system-deps: ## the Debian packages (redis, valkey, sentinel, busybox, promtool, exporter), when one is missing
	@missing=""; valkey_missing=""; \
	for bin in $(SYSTEM_BINARIES); do command -v $$bin >/dev/null || missing="$$missing $$bin"; done; \
	for bin in $(VALKEY_BINARIES); do command -v $$bin >/dev/null || valkey_missing="$$valkey_missing $$bin"; done; \
	if ! $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null; then missing="$$missing python3-venv"; fi; \
	if [ -z "$$missing$$valkey_missing" ]; then exit 0; fi; \
	echo "installing Debian packages for:$$missing$$valkey_missing"; \
	codename=$$(. /etc/os-release && echo "$${VERSION_CODENAME:-}"); target=""; \
	if [ -n "$$valkey_missing" ] && [ "$$codename" = bookworm ]; then \
		target="-t bookworm-backports"; \
		[ -e $(BACKPORTS_SOURCE) ] || printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' \
			'Suites: bookworm-backports' 'Components: main' \
			'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' > $(BACKPORTS_SOURCE); \
	fi; \
	apt-get update -qq; \
	if [ -n "$$missing" ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			$(SYSTEM_PACKAGES) python3 python3-venv >/dev/null; fi; \
	if [ -n "$$valkey_missing" ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$target \
			$(VALKEY_PACKAGES) >/dev/null; fi; \
	for svc in redis-server redis-sentinel valkey-server valkey-sentinel prometheus prometheus-redis-exporter; do \
		service $$svc stop >/dev/null 2>&1 || true; done

python-deps: $(VENV)/.installed ## the virtualenv .venv with the pinned pip requirements

$(VENV)/.installed: requirements.txt requirements-dev.txt smoke/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

render: python-deps ## offline render of STACK (dev|prod) into build/render/<stack>/
	$(PY) -m smoke.local.render --stack $(STACK)

# The dev stack's rendered files as real processes on loopback, up until Ctrl-C.
rehearsal: deps ## the dev stack as real processes on loopback, until Ctrl-C
	$(PY) -m smoke.local.render --stack dev
	$(PY) -m smoke.local.rehearsal --render-dir build/render/dev/k8s

# The main job: render dev, start it on loopback, run every smoke check and the failover drill,
# write build/smoke-report.json, stop everything; non-zero exit on any failed check.
local: deps ## the main job: dev on loopback, every smoke check and the failover drill (SERVER=valkey|redis)
	$(PY) -m smoke.local.render --stack dev
	$(PY) -m smoke local --render-dir build/render/dev/k8s --report build/smoke-report.json

# The backup drill: full cluster loss on loopback, restored from a backup in moto's S3; writes
# build/drill-backup.json. tests/test_backup_drill.py runs the same drill in `make test`.
# KEYS: how many keys it writes (at least 1); STACK: whose render it runs. At the size production
# holds: `make drill-backup STACK=prod KEYS=1000000` (the prod stack's maxmemory holds it; dev's
# 256/128 MiB would evict or refuse it). The benchmark runs that size as its restore_at_scale.
KEYS ?= 100000
drill-backup: deps ## full cluster loss on loopback, restored from a backup in moto S3 (KEYS=, STACK=)
	$(PY) -m smoke.local.render --stack $(STACK)
	$(PY) -m smoke.drills.backup --render-dir build/render/$(STACK)/k8s --report build/drill-backup.json --keys $(KEYS)

test: deps ## ruff and the whole test suite (what CI runs)
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: python-deps ## ruff over the whole tree (no tests)
	$(PY) -m ruff check .

# The CrossGuard pack over every resource the real program registers under mocks, through the
# pack's own analyzer server; writes build/policy-$(STACK).json, fails on a mandatory violation.
policy: python-deps ## the policy pack over every resource of STACK (dev|prod)
	$(PY) -m policies.analyze --stack $(STACK)

clean: ## remove build/ and the tool caches
	rm -rf build .pytest_cache .ruff_cache

# The benchmark (not part of `make test`): render dev, start it on loopback, measure every strategy
# operation against raw redis-py (client latency and server CPU per call), memory, growth to 1M
# keys, concurrency, capacity with 1, 2 and 4 client processes and the load generator's ceiling,
# and five failovers per tier; then the backup drill at RESTORE_KEYS keys on a rehearsal of the
# prod render (its maxmemory). Prints a table, writes build/bench.json and build/bench.png, stops
# everything. About 10 minutes on 2 cores; figures in docs/performance.md.
RESTORE_KEYS ?= 1000000
.PHONY: bench
bench: deps ## the benchmark: build/bench.json, build/bench.png and a table (about 10 minutes)
	$(PY) -m smoke.local.render --stack dev
	$(PY) -m smoke.local.render --stack prod
	$(PY) -m smoke.bench --render-dir build/render/dev/k8s --out build/bench.json --png build/bench.png \
		--restore-keys $(RESTORE_KEYS) --restore-render-dir build/render/prod/k8s
