# Two commands for a new user: `make run` (the whole stack on the embedded default)
# and `make test` (every test). Everything else is set up by these targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install chromium wrk keycloak-prerequisites lint bench bench-quick bench-audit-10m reliability clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install keycloak-prerequisites
	$(BIN)/referral dev-stack

# Every test, the fault-injection suite (tests/reliability, 4 scenarios on SQLite, 5 on
# PostgreSQL) included.
test: install chromium wrk
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# A system tool from Debian's packages: installed as root when missing; otherwise the
# command to run is printed. $(call apt-tool,command,package,what needs it)
define apt-tool
	@command -v $(1) >/dev/null 2>&1 || { \
	    if [ "$$(id -u)" -eq 0 ]; then \
	        echo "installing $(2) ($(3))" >&2; \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	            apt-get install -y -qq --no-install-recommends $(2); \
	    else \
	        echo "$(1) is missing: 'sudo apt-get install $(2)' for $(3)" >&2; \
	    fi; }
endef

# The browser tests (tests/integration/browser) drive Debian's chromium through Playwright.
# Without it they skip (and fail under CI=true).
chromium:
	$(call apt-tool,chromium,chromium,the browser tests)

# The GET rows of the benchmark (and its harness test) are driven by wrk, a load generator
# written in C: a Python client costs more CPU than the bare route it measures. Without it
# the harness test skips (and fails under CI=true) and `make bench` stops, saying why.
wrk:
	$(call apt-tool,wrk,wrk,the benchmark's GET rows)

# Keycloak (the identity provider) runs on Java 17+ and is fetched from Maven Central with
# mvn (and unzipped). As root the Debian packages are installed when missing; otherwise the
# exact command is printed and `make run` stops.
keycloak-prerequisites:
	@missing=""; \
	java_major=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\)[."].*/\1/p' | head -1); \
	if [ -z "$$java_major" ] || [ "$$java_major" -lt 17 ]; then missing="$$missing openjdk-17-jre-headless"; fi; \
	command -v mvn >/dev/null 2>&1 || missing="$$missing maven"; \
	command -v unzip >/dev/null 2>&1 || missing="$$missing unzip"; \
	if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" -eq 0 ]; then \
	        echo "installing for Keycloak:$$missing" >&2; \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	            apt-get install -y -qq --no-install-recommends $$missing; \
	    else \
	        echo "Keycloak needs Java 17+, Maven and unzip. Install them with:" >&2; \
	        echo "  sudo apt-get install -y$$missing" >&2; \
	        exit 1; \
	    fi; \
	fi

# Only the fault-injection suite: kill -9 of the worker, the API and Temporal under 40
# concurrent lifecycles, an identity-provider outage, a PostgreSQL restart.
reliability: install
	$(BIN)/python -m pytest tests/reliability -m reliability $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# Every benchmark (4 to 7 minutes on 2 cores); REFERRAL_BENCH_DATABASE_URL=postgresql+psycopg://...
# runs the API rows on PostgreSQL.
bench: install wrk
	$(BIN)/python -m bench

# The audit rows with proofs on a stored tree of 10,000,000 entries as well as 1,000,000
# (building the 10M tree takes several minutes and about 1.5 GB of disk in a temporary file).
bench-audit-10m: install
	REFERRAL_BENCH_AUDIT_PROOF_SIZES=1000000,10000000 $(BIN)/python -m bench bench.audit_bench

# A short smoke run of the API rows (under a minute).
bench-quick: install wrk
	REFERRAL_BENCH_SIZE=quick $(BIN)/python -m bench bench.api_bench

clean:
	rm -rf $(VENV) .data
