# The two set-up commands (README "Quick start"): `make up` and `make test`.
# Each creates .venv and installs exactly the tested versions (constraints.txt) first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test check lint install

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "ShopStream needs Python 3.11: set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/shopstream up

# Everything, against real servers the suite starts itself. Most of a test's time is spent
# waiting on servers, so three workers (each with servers of its own) keep two cores busy;
# TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 3
test: $(STAMP)
	$(BIN)/shopstream test-setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal --durations=15

# The edit loop: lint, the floors, and every test that needs no server (well under a minute).
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -m "not servers" -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
