# Verity — the two commands a newcomer needs are `make serve` and `make test`.
# Every target installs what it needs into .venv itself (Python 3.11).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMPS := .stamps
HOST   ?= 127.0.0.1
PORT   ?= 3000

# The project's own model store and built bentos (contents git-ignored). The same defaults hold
# outside make: $(PROJECT_PTH) sets them in every .venv interpreter, so `.venv/bin/bentoml ...`,
# `.venv/bin/python -m models ...` and the server all read and write ./bentos.
BENTOML_HOME ?= $(CURDIR)/bentos
export BENTOML_HOME
export BENTOML_DO_NOT_TRACK := True
PROJECT_PTH = $(VENV)/lib/python3.11/site-packages/verity-project.pth
export PYTHONPATH := $(CURDIR)
export TF_CPP_MIN_LOG_LEVEL := 2

# This machine's pip config lists local mirrors that lack most packages; hide that noise only.
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
QUIET_PIP := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: help system-deps setup setup-runtime serve models test test-fast lint bench bench-quick soak build clean

help:
	@echo "make serve   install, build the default models, serve on http://$(HOST):$(PORT)"
	@echo "make test    install and run the whole test suite"
	@echo "make models  export the served models into bentos/ (hub, or dev weights offline)"
	@echo "make bench   benchmarks (results printed and written under bench/results/)"
	@echo "make bench-quick  a few minutes: the PyTorch baseline vs the default \`make serve\` at concurrency 8"
	@echo "make soak    a mixed load for SOAK_S seconds (default 300): 5xx, p50/p99, RSS over time"
	@echo "make build   bentoml build (offline)"
	@echo "make lint    ruff"
	@echo "make system-deps  ffmpeg (M4A/AAC audio) and jq (and chromium for make setup), with apt-get when missing"

$(PY):
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) "pip>=25.1" $(QUIET_PIP)

# One stamp per dependency group; re-installed when pyproject.toml changes. The group is read with
# tomllib rather than `pip install --group`, which needs pip >= 25.1: a .venv made by an older pip
# (python -m venv, an IDE) would otherwise fail with "no such option: --group".
GROUP_REQUIREMENTS = $(PY) -c "import sys, tomllib; \
	print(*tomllib.load(open('pyproject.toml', 'rb'))['dependency-groups'][sys.argv[1]], sep='\n')"

$(STAMPS)/%: pyproject.toml | $(PY)
	@mkdir -p $(STAMPS)
	@echo "installing dependency group '$*' ..."
	$(PIP) -r <($(GROUP_REQUIREMENTS) $*) $(QUIET_PIP)
	@touch $@

# A .pth file's `import` line runs at every start of the venv's interpreter (the `site` module):
# the project's defaults, unless the environment already names others.
$(STAMPS)/project-env: Makefile | $(PY)
	@mkdir -p $(STAMPS)
	@printf '%s\n' 'import os; os.environ.setdefault("BENTOML_HOME", "$(CURDIR)/bentos"); os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")' > $(PROJECT_PTH)
	@touch $@

# System packages: ffmpeg/ffprobe decode M4A/AAC audio and probe video (media/), jq reads JSON in
# the README's upload walk-through, chromium (/usr/bin/chromium) runs the page's browser tests
# (tests/e2e/test_page.py; Playwright's own browser download is never used), so only `make setup`
# (test, lint, bench) asks for it, not `make serve`. Debian's packages, installed with apt-get only
# when missing (as root, or through sudo); nothing happens when all are there.
system-deps:
	@missing=""; \
	{ command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null; } || missing="$$missing ffmpeg"; \
	command -v jq >/dev/null || missing="$$missing jq"; \
	[ -z "$(WANT_CHROMIUM)" ] || [ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -n "$$missing" ] || exit 0; \
	command -v apt-get >/dev/null || { echo "not found:$$missing, and no apt-get: install them yourself"; exit 1; }; \
	sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
	echo "installing$$missing with apt-get ..."; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing

setup-runtime: system-deps $(STAMPS)/runtime $(STAMPS)/export $(STAMPS)/project-env
setup: WANT_CHROMIUM := 1
setup: system-deps setup-runtime $(STAMPS)/dev

models: setup-runtime
	$(PY) -m models ensure

serve: models
	$(VENV)/bin/bentoml serve service:Verity --host $(HOST) --port $(PORT)

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow and not e2e"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# A mixed load (media, hostile files, a login flood, reads) for SOAK_S seconds against a served
# API started the way `make serve` starts it; passes with no 5xx, no connection error, flat RSS.
SOAK_S ?= 300
soak: setup models
	$(PY) -m bench.soak --duration-s $(SOAK_S)

bench: setup models
	$(PY) -m bench.image
	$(PY) -m bench.trust
	$(PY) -m bench.audio
	$(PY) -m bench.text
	$(PY) -m bench.video
	$(PY) -m bench.lambda_cold
	$(PY) -m bench.jobs
	$(PY) -m bench.batch

# The headline on any machine in a few minutes: images/s of the PyTorch baseline and of the
# default served API (precision auto) at concurrency 8, and their ratio.
bench-quick: setup models
	$(PY) -m bench.image --quick

# `bentoml build` prints only the tag: say what the bento holds and where it went.
build: models
	@tag=$$($(VENV)/bin/bentoml build --output tag | sed -n 's/^__tag__://p'); \
	[ -n "$$tag" ] || { echo "bentoml build printed no tag"; exit 1; }; \
	$(PY) -m models bento "$$tag"

clean:
	rm -rf $(VENV) $(STAMPS) .pytest_cache .ruff_cache
