# The README's two commands are `make demo` and `make test`; both bootstrap first.
VENV := .venv
FCL := $(VENV)/bin/fcl
PYTEST_ARGS ?=
# Parallel test workers (pytest-xdist). On the 2-CPU development VM a fresh clone took 7 min 20 s
# with 2 workers (the CPU 44 % idle: the three-node Kafka cluster, the real Prometheus and the
# install test wait more than they compute), 6 min 17 s to 6 min 22 s with 3, and 4 were slower.
TEST_WORKERS ?= 3
DEMO_ARGS ?=

.PHONY: bootstrap stack-up stack-down stack-status migrate check test demo bench soak clean

bootstrap:
	@bash scripts/bootstrap.sh

stack-up: bootstrap
	@$(FCL) stack up

stack-down:
	@if [ -x $(FCL) ]; then $(FCL) stack down; fi

stack-status: bootstrap
	@$(FCL) stack status

migrate: stack-up
	@$(FCL) migrate

# The static checks `make test` runs before the tests: lint, format and types (pyproject.toml).
check: bootstrap
	@$(VENV)/bin/ruff check --quiet .
	@$(VENV)/bin/ruff format --check --quiet .
	@# mypy's cache lives beside uv's and the Kafka jars' (it checks every file's hash, so a new
	@# clone reuses what did not change instead of checking torch's and pydantic's stubs again)
	@MYPY_CACHE_DIR=$${XDG_CACHE_HOME:-$$HOME/.cache}/fcl/mypy $(VENV)/bin/mypy

test: check
	@$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# `make demo DEMO_ARGS=--exit-when-done` stops by itself once it has shown its results.
demo: bootstrap
	@$(FCL) demo $(DEMO_ARGS)

bench: stack-up
	@set -e; for b in bench/bench_*.py; do echo "== $$b"; $(VENV)/bin/python $$b; done

# 30 minutes of mixed and hostile traffic with crashes and restarts (SOAK_ARGS="--minutes 5")
soak: stack-up
	$(VENV)/bin/python bench/soak.py $(SOAK_ARGS)

clean: stack-down
	@# as root the database lives outside the checkout (see README): remove it too
	@if [ -x $(VENV)/bin/python ]; then $(VENV)/bin/python -c "import shutil; from pathlib import Path; \
	from fcl.stack.postgres import server_home; shutil.rmtree(server_home(Path('.fcl/stack')).parent, ignore_errors=True) \
	if server_home(Path('.fcl/stack')).parent.name.startswith('fcl-') else None"; fi
	rm -rf .fcl .mypy_cache .ruff_cache
