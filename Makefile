# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run test lint typecheck proto check-proto unit bench clean mutants

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or: make PYTHON=python3 ...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Regenerate identity.v1 Python code from protos/ (pinned grpcio-tools + mypy-protobuf).
proto: $(STAMP)
	PYTHON=$(PY) tools/genproto.sh

# Fails when the committed generated code differs from what the protos produce.
check-proto: $(STAMP)
	@tmp=$$(mktemp -d) && PYTHON=$(PY) tools/genproto.sh $$tmp >/dev/null && \
	  for f in $$tmp/scim_identity_api/v1/*_pb2*; do \
	    cmp -s $$f protos/scim_identity_api/v1/$$(basename $$f) || { echo "stale generated code: protos/scim_identity_api/v1/$$(basename $$f) (run make proto)"; rm -rf $$tmp; exit 1; }; \
	  done; \
	  n_gen=$$(ls $$tmp/scim_identity_api/v1/*_pb2* | wc -l); n_have=$$(ls protos/scim_identity_api/v1/*_pb2* | wc -l); \
	  rm -rf $$tmp; [ $$n_gen -eq $$n_have ] || { echo "generated file set differs (run make proto)"; exit 1; }; \
	  echo "generated code is current"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# Starts identity service + SCIM gateway on SQLite, creates a demo tenant, prints URL and token.
run: $(STAMP)
	$(PY) tools/run_local.py

test: $(STAMP) check-proto lint typecheck
	$(PY) -m pytest -n 2 --dist loadgroup -q

unit: $(STAMP)
	$(PY) -m pytest -q -m 'not e2e'

bench: $(STAMP)
	$(PY) -m bench $(BENCH_ARGS)

# Mutation testing of the event log, streams, token checks and scopes, uniqueness, PATCH
# application and migrations (tools/mutants.py); rewrites docs/mutants.md. ~30 min; not part of `make test`.
MUTANTS_STAMP := $(VENV)/.mutants-installed
$(MUTANTS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,mutants]'
	touch $(MUTANTS_STAMP)

mutants: $(MUTANTS_STAMP)
	$(PY) tools/mutants.py $(MUTANTS_ARGS)

clean:
	rm -rf .mutants .mutmut-cache
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache identity.db*
