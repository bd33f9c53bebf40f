# Two commands do all set-up: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test test-cluster lint migrate superuser clean

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

test: $(VENV)/.installed-dev
	DJANGO_DEBUG=true $(BIN)/python -m pytest $(PYTEST_ARGS)

# The production shape alone: daphne processes behind nginx on Redis and PostgreSQL.
test-cluster: $(VENV)/.installed-dev
	DJANGO_DEBUG=true $(BIN)/python -m pytest -m cluster $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

migrate: $(VENV)/.installed
	DJANGO_DEBUG=$${DJANGO_DEBUG:-true} $(BIN)/python manage.py migrate --noinput

superuser: $(VENV)/.installed
	DJANGO_DEBUG=$${DJANGO_DEBUG:-true} $(BIN)/python manage.py createsuperuser

clean:
	rm -rf $(VENV) staticfiles .pytest_cache
