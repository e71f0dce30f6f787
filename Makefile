# One Makefile; CI calls the same targets. Everything runs from the project's virtualenv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# `make run` serves on $(LISTEN) with $(DB): the server's own variables, then these defaults.
LISTEN ?= $(or $(WAYSTATION_LISTEN),127.0.0.1:50051)
DB     ?= $(or $(WAYSTATION_DB),sqlite:///waystation.db)

# Client packages: each has generate.sh (checked-in generated code; Java generates at build
# time) and test.sh (its end-to-end tests, run against a real server by with_server.sh).
CLIENTS     ?= python typescript go java
GEN_CLIENTS ?= python typescript go

.PHONY: install generate check-generated lint test test-clients bench crash run clean

$(BIN)/waystation: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/waystation ## Create .venv and install the server with its dev tools.

generate: install ## Regenerate every language's code from protos/ (never edit it by hand).
	PATH="$(CURDIR)/$(BIN):$$PATH" PYTHON=$(BIN)/python scripts/generate_python.sh
	@for client in $(GEN_CLIENTS); do \
	  echo "== generate clients/$$client"; \
	  PATH="$(CURDIR)/$(BIN):$$PATH" PYTHON=$(CURDIR)/$(BIN)/python BUF=$(CURDIR)/$(BIN)/buf \
	    clients/$$client/generate.sh || exit 1; \
	done

check-generated: generate ## Fail when the checked-in generated code is stale.
	@git diff --exit-code -- server/waystation/api clients || \
	  (echo "generated code is stale: run 'make generate' and commit" >&2; exit 1)
	@test -z "$$(git status --porcelain -- server/waystation/api clients)" || \
	  (git status --porcelain -- server/waystation/api clients >&2; \
	   echo "untracked generated files: run 'make generate' and commit" >&2; exit 1)

lint: install ## ruff, mypy --strict, buf lint, hadolint.
	$(BIN)/ruff check server tests bench
	$(BIN)/ruff format --check server tests bench
	$(BIN)/mypy
	$(BIN)/buf lint
	@# No change may break a published client: compare with the protos on main.
	@if git rev-parse --verify -q main >/dev/null; then \
	  echo "$(BIN)/buf breaking --against .git#branch=main"; \
	  $(BIN)/buf breaking --against '.git#branch=main'; fi
	$(BIN)/hadolint Dockerfile

test: install ## The whole test suite against real servers and real SQLite files.
	$(BIN)/pytest

test-clients: install ## Each client's end-to-end tests against a real server.
	@for client in $(CLIENTS); do \
	  echo "== clients/$$client"; \
	  scripts/with_server.sh clients/$$client/test.sh || exit 1; \
	done

bench: install ## Benchmarks against floors and peers (BENCH_ARGS=--quick for a short run).
	$(BIN)/python -m bench $(BENCH_ARGS)

crash: install ## The long crash suite: many SIGKILLs under load, then the checker.
	$(BIN)/python -m tests.crash $(CRASH_ARGS)

run: install ## Serve the example workflows on $(LISTEN) with $(DB).
	$(BIN)/waystation serve --listen $(LISTEN) --db $(DB)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
