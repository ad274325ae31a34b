# fsad-studio: `make app` starts the studio, `make test` runs the tests. Both set up everything
# they need on a fresh machine (virtualenv, Python packages, Debian's chromium for browser tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
APP_STAMP := $(VENV)/.app-installed
DEV_STAMP := $(VENV)/.dev-installed
ARGS ?=

.PHONY: app test lint venv dev chromium models bench bench-engine clean-venv

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# SAM 2.1 tiny (the light CPU mask encoder) builds against the installed torch; without it the
# mask assistant falls back to SAM vit_b, so a failed build is a warning, not an error.
SAM2 = SAM2_BUILD_CUDA=0 $(PY) -m pip install -q --no-build-isolation "sam2==1.1.0" \
	|| echo "warning: sam2 did not install; the mask assistant will use SAM vit_b"

# The package itself is installed editable (pyproject.toml): `fsad`, `fsad-storage` and `fsad-studio`
# commands, and imports that work from any directory without sys.path edits.
INSTALL_SELF = $(PY) -m pip install -q --no-deps -e .

$(APP_STAMP): requirements.txt pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -r requirements.txt
	$(INSTALL_SELF)
	$(SAM2)
	touch $@

$(DEV_STAMP): requirements.txt requirements-dev.txt pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -r requirements-dev.txt
	$(INSTALL_SELF)
	$(SAM2)
	touch $(APP_STAMP) $@

venv: $(APP_STAMP)
dev: $(DEV_STAMP)

# Debian's chromium drives the end-to-end browser tests (`playwright install` cannot download here).
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = "0" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; fi; \
	fi

app: $(APP_STAMP)
	$(PY) app.py $(ARGS)

# Lint: pyflakes, bugbear, import order and a complexity ceiling (pyproject.toml [tool.ruff]).
LINT_PATHS = app.py fsad_core ui storage tests benchmarks
lint: $(DEV_STAMP)
	$(PY) -m ruff check $(LINT_PATHS)

test: lint chromium
	$(PY) -m pytest -q

models: $(APP_STAMP)
	$(PY) -m fsad_core models pull clip
	$(PY) -m fsad_core models pull sam

bench: $(DEV_STAMP)
	$(PY) benchmarks/bench_vs_anomalib.py

clean-venv:
	rm -rf $(VENV)
