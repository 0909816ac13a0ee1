# Loupe — two commands: `make run` and `make test`.
# Installs are idempotent: a stamp file inside .venv records that the current
# requirements files are installed, so a second `make test` starts in seconds.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PORT   ?= 8501
SUDO   := $(shell [ "$$(id -u)" = "0" ] || echo sudo)
RUN_STAMP := $(VENV)/.install-stamp-run
DEV_STAMP := $(VENV)/.install-stamp-dev
PYTEST_ARGS ?=

.PHONY: run install install-dev test bench browser clean-venv

run: install
	@echo "Loupe: open http://localhost:$(PORT) (workspace: $${LOUPE_HOME:-./workspace})"
	$(PY) -m streamlit run app.py --server.port $(PORT) --server.headless true

install: $(RUN_STAMP)

install-dev: $(DEV_STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): requirements.txt | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

$(DEV_STAMP): requirements.txt requirements-dev.txt requirements-ray.txt $(RUN_STAMP)
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt -r requirements-ray.txt
	@touch $@

# Debian's chromium for the browser tests (Playwright cannot download browsers here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian's chromium for the browser tests"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null; }

test: install-dev browser
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install-dev
	$(PY) -m pip install --quiet -r bench/requirements-bench.txt  # peer tools compared in bench/ only
	$(PY) bench/run_all.py

clean-venv:
	rm -rf $(VENV)
