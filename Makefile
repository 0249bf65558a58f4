# Two commands do all the set-up on a fresh Debian/Ubuntu machine with Python 3.11:
#   make run    create .venv, install, start the dashboard on the demo data at http://127.0.0.1:8501
#   make test   create .venv, install, run the whole test suite (unit, app and browser tests)

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STREAMLIT_FLAGS := --server.address 127.0.0.1 --server.port 8501 --server.headless true \
                   --browser.gatherUsageStats false

.PHONY: run test system-deps bench

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# Chromium for the browser tests, PostgreSQL for the several-lines tests (each test run starts its own throwaway
# cluster) and tcmalloc for faster training; all optional for `make run`.
system-deps:
	@if ! command -v chromium >/dev/null || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! test -e /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 -o -e /usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4; then \
		SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium postgresql libtcmalloc-minimal4 >/dev/null; \
	fi

run: $(VENV)/.installed
	-@$(MAKE) --no-print-directory system-deps || echo "tcmalloc not installed: training works, about 1.7x slower"
	$(PY) -m defect_model accounts first-link --url http://127.0.0.1:8501
	$(PY) -m streamlit run app.py $(STREAMLIT_FLAGS)

# The layering contract (.importlinter) first: a wrong-way import fails in seconds, before the long suite.
test: $(VENV)/.installed system-deps
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q --durations=25

bench: $(VENV)/.installed
	$(PY) bench/reproduce_neu.py
