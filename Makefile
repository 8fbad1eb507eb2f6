# Two commands for a new user: `make run` (the whole stack on the embedded default)
# and `make test` (every test). Everything else is set up by these targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install chromium lint bench reliability clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/referral dev-stack

test: install chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The browser tests (tests/integration/browser) drive Debian's chromium through Playwright.
# As root it is installed when missing; otherwise they skip (and fail under CI=true).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	    if [ "$$(id -u)" -eq 0 ]; then \
	        echo "installing chromium (browser tests)" >&2; \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	            apt-get install -y -qq --no-install-recommends chromium; \
	    else \
	        echo "chromium is missing: 'sudo apt-get install chromium' for the browser tests" >&2; \
	    fi; }

# Only the fault-injection suite (it also runs within `make test`).
reliability: install
	$(BIN)/python -m pytest tests/reliability $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .data
