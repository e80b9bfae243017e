# Development tasks; docs/development.md explains them.
#
#   make run         the app with demo data: web + Celery worker + beat (PORT=8000)
#   make test        ruff, makemigrations --check, then the whole pytest suite (ARGS=..., TEST_JOBS=...)
#   make test-faults the slow fault suite: real servers, kills and outages (docs/faults.md)
#   make lint        ruff check + ruff format --check
#   make fmt         fix what ruff can, then format
#   make bench       bench/run.py (ARGS=...)
#   make clean-data  stop the embedded PostgreSQL and delete .data/
#
# Without DATABASE_URL, run/test/bench use an embedded PostgreSQL under
# .data/pg (scripts/dev.py db-url). Nothing else needs installing.

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Python used to create the venv; the first 3.11+ of these when unset.
PYTHON ?=
PYTHONS := $(or $(PYTHON),python3 python3.14 python3.13 python3.12 python3.11)
ARGS ?=
# Test processes side by side (pytest-xdist), each test to whichever is free;
# TEST_JOBS=0 runs the suite in one process.
TEST_JOBS ?= auto

# DATABASE_URL from the environment, or the embedded server (started if needed).
WITH_DB = DATABASE_URL="$$($(PY) scripts/dev.py db-url)"; export DATABASE_URL;

.DEFAULT_GOAL := help
.PHONY: help run test test-faults lint fmt bench clean-data

help:
	@sed -n 's/^#   //p' Makefile

$(VENV): $(STAMP)

# Reinstalls when pyproject.toml is newer than the stamp.
$(STAMP): pyproject.toml
	@set -e; \
	if [ ! -x $(PY) ]; then \
	  py=""; \
	  for candidate in $(PYTHONS); do \
	    if $$candidate -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
	      py=$$candidate; break; \
	    fi; \
	  done; \
	  if [ -z "$$py" ]; then \
	    echo "Python 3.11 or newer is needed (tried: $(PYTHONS))." >&2; \
	    echo "Install it, or name it: make PYTHON=/path/to/python3.11 ..." >&2; \
	    exit 1; \
	  fi; \
	  echo "Creating $(VENV) with $$($$py -V)"; \
	  $$py -m venv $(VENV) || { \
	    rm -rf $(VENV); \
	    echo "Could not create $(VENV). On Debian/Ubuntu: apt install python3-venv" >&2; \
	    exit 1; }; \
	fi; \
	if ! $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
	  echo "$(VENV) runs $$($(PY) -V); Python 3.11+ is needed: rm -rf $(VENV) and retry." >&2; \
	  exit 1; \
	fi
	$(PY) -m pip install --disable-pip-version-check -e '.[dev]'
	@touch $@

run: $(STAMP)
	$(PY) scripts/dev.py run

test: $(STAMP)
	$(VENV)/bin/ruff check .
	@set -e; $(WITH_DB) export OPSPANEL_TESTING=1; \
	echo "$(PY) manage.py makemigrations --check --dry-run"; \
	$(PY) manage.py makemigrations --check --dry-run; \
	echo "$(VENV)/bin/pytest -n $(TEST_JOBS) --maxprocesses 4 --dist load $(ARGS)"; \
	$(VENV)/bin/pytest -n $(TEST_JOBS) --maxprocesses 4 --dist load $(ARGS)

# Its own PostgreSQL and Redis on free ports; DATABASE_URL only configures
# the test process. Figures in test-artifacts/faults/.
test-faults: $(STAMP)
	@set -e; $(WITH_DB) export OPSPANEL_TESTING=1 OPSPANEL_FAULTS=1; \
	echo "$(VENV)/bin/pytest -p no:xdist tests/faults $(ARGS)"; \
	$(VENV)/bin/pytest -p no:xdist tests/faults $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	@if [ ! -f bench/run.py ]; then echo "No bench/run.py yet." >&2; exit 1; fi
	@set -e; $(WITH_DB) echo "$(PY) bench/run.py $(ARGS)"; $(PY) bench/run.py $(ARGS)

clean-data:
	@if [ -f .data/pg/postmaster.pid ] && [ -x $(PY) ]; then $(PY) scripts/dev.py db-stop; fi
	rm -rf .data
