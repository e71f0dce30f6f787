# One Makefile; CI calls the same targets. Everything runs from the project's virtualenv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LISTEN ?= 127.0.0.1:50051
DB     ?= sqlite:///waystation.db

.PHONY: install generate check-generated lint test run clean

$(BIN)/waystation: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/waystation ## Create .venv and install the server with its dev tools.

generate: install ## Regenerate the Python code from protos/ (never edit it by hand).
	PATH="$(CURDIR)/$(BIN):$$PATH" PYTHON=$(BIN)/python scripts/generate_python.sh

check-generated: generate ## Fail when the checked-in generated code is stale.
	@git diff --exit-code -- server/waystation/api || \
	  (echo "generated code is stale: run 'make generate' and commit" >&2; exit 1)
	@test -z "$$(git status --porcelain -- server/waystation/api)" || \
	  (echo "untracked generated files: run 'make generate' and commit" >&2; exit 1)

lint: install ## ruff, mypy --strict, buf lint, hadolint.
	$(BIN)/ruff check server tests
	$(BIN)/ruff format --check server tests
	$(BIN)/mypy
	$(BIN)/buf lint
	$(BIN)/hadolint Dockerfile

test: install ## The whole test suite against real servers and real SQLite files.
	$(BIN)/pytest

run: install ## Serve the example workflows on $(LISTEN) with $(DB).
	$(BIN)/waystation serve --listen $(LISTEN) --db $(DB)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
