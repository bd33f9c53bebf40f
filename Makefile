# Two commands do all set-up: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

# Autobahn|Testsuite (the reliability suite's WebSocket fuzzer) runs on Python 2.7 only.
PYTHON2 ?= $(HOME)/.pyenv/versions/2.7.18/bin/python
RELIABILITY := .reliability

.PHONY: run test test-js test-fast test-cluster test-image test-reliability lint migrate superuser clean bench

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

$(VENV)/.installed-reliability: requirements-reliability.txt $(VENV)/.installed-dev
	$(BIN)/pip install --quiet -r requirements-reliability.txt
	touch $@

# Into its own directory with Python 2.7's pip, never into the project venv.
$(RELIABILITY)/autobahn/.installed: tests/reliability/autobahn-requirements.txt
	$(PYTHON2) -m pip install --quiet --no-deps --target $(RELIABILITY)/autobahn -r tests/reliability/autobahn-requirements.txt
	touch $@

run: $(VENV)/.installed
	DJANGO_DEBUG=$${DJANGO_DEBUG:-true} $(BIN)/python manage.py migrate --noinput
	@echo ""
	@echo "  realtime_project on http://$(HOST):$(PORT)/"
	@echo "    WebSocket test page  http://$(HOST):$(PORT)/ws/test-page"
	@echo "    SSE test page        http://$(HOST):$(PORT)/sse/test"
	@echo "    Admin                http://$(HOST):$(PORT)/admin/   (create a user: make superuser)"
	@echo "    API root             http://$(HOST):$(PORT)/api/"
	@echo "    API docs             http://$(HOST):$(PORT)/api/docs/"
	@echo "    WebSocket endpoint   ws://$(HOST):$(PORT)/ws/connect"
	@echo "    SSE endpoint         http://$(HOST):$(PORT)/sse/connect"
	@echo ""
	DJANGO_DEBUG=$${DJANGO_DEBUG:-true} $(BIN)/python -m realtime_project.server -b $(HOST) -p $(PORT) realtime_project.asgi:application

test: $(VENV)/.installed-dev test-js
	DJANGO_DEBUG=true $(BIN)/python -m pytest -m "not reliability and not image" $(PYTEST_ARGS)

# The edit-and-test loop: no servers, no browser, no Redis or PostgreSQL; two workers.
FAST := not reliability and not server and not browser and not cluster and not redis and not postgres
test-fast: $(VENV)/.installed-dev
	DJANGO_DEBUG=true $(BIN)/python -m pytest -n 2 -m "$(FAST)" $(PYTEST_ARGS)

JS := clients/js

$(JS)/node_modules/.installed: $(JS)/package.json $(JS)/package-lock.json
	cd $(JS) && npm ci --no-audit --no-fund
	touch $@

# The browser client's unit, size and packaging tests (node's test runner). Without Node.js they
# are skipped locally and fail under CI, like the tests that need Redis or Chromium.
test-js:
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
	  $(MAKE) --no-print-directory $(JS)/node_modules/.installed && cd $(JS) && npm test --silent; \
	elif [ "$$CI" = true ]; then \
	  echo "test-js: Node.js and npm are required under CI" >&2; exit 1; \
	else \
	  echo "test-js: SKIPPED, Node.js or npm is not installed (the browser client's unit tests did not run)"; \
	fi

# The production shape alone: daphne processes behind nginx on Redis and PostgreSQL.
test-cluster: $(VENV)/.installed-dev
	DJANGO_DEBUG=true $(BIN)/python -m pytest -m cluster $(PYTEST_ARGS)

# The container image: built from the Dockerfile and run under Docker on PostgreSQL and Redis, two
# containers behind nginx (tests/image/; README "Deployment"). Starts Debian's dockerd when no daemon
# answers; without a reachable registry it builds on a stand-in base made with debootstrap.
test-image: $(VENV)/.installed-dev
	DJANGO_DEBUG=true $(BIN)/python -m pytest -m image $(PYTEST_ARGS)

# Conformance, fuzzing, faults and a 15-minute soak (about 25 minutes); figures: docs/RELIABILITY.md.
test-reliability: $(VENV)/.installed-reliability $(RELIABILITY)/autobahn/.installed
	DJANGO_DEBUG=true AUTOBAHN_PYTHON=$(PYTHON2) $(BIN)/python -m pytest -m reliability $(PYTEST_ARGS)

$(VENV)/.installed-bench: bench/requirements.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r bench/requirements.txt
	touch $@

# Load tests against our server and peer servers; ~50 min; writes bench/RESULTS.md. Not part of
# `make test`. Pushpin is compared when installed (apt-get install pushpin). BENCH_ARGS: see
# `$(BIN)/python -m bench.run --help`.
bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench.run $(BENCH_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

migrate: $(VENV)/.installed
	DJANGO_DEBUG=$${DJANGO_DEBUG:-true} $(BIN)/python manage.py migrate --noinput

superuser: $(VENV)/.installed
	DJANGO_DEBUG=$${DJANGO_DEBUG:-true} $(BIN)/python manage.py createsuperuser

clean:
	rm -rf $(VENV) staticfiles .pytest_cache $(RELIABILITY)
