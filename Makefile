# The two commands a newcomer needs: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo docs native test lint typecheck unit integration venv jars services soak stack-up stack-down stack-status bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

jars: $(STAMP)
	$(BIN)/hindsight stack fetch

demo: jars native
	$(BIN)/hindsight demo

# The window engine compiled with mypyc (optional: without a compiler the source runs, and a
# compiled module whose source changed since is never used; see pipeline/engine/__init__.py).
# (its compiler output goes to a log: shown only when the build fails)
pipeline/engine/native.sha256: $(STAMP) $(wildcard pipeline/engine/*.py) $(wildcard pipeline/*/_*.c) scripts/build_native.py
	@mkdir -p .hindsight && echo "compiling the window engine and the C fast paths (log: .hindsight/build-native.log)"
	@$(BIN)/python scripts/build_native.py > .hindsight/build-native.log 2>&1 \
		|| (tail -40 .hindsight/build-native.log; exit 1)
	@tail -1 .hindsight/build-native.log

native: pipeline/engine/native.sha256

# The configuration reference is generated from the settings (a test fails when it is stale).
docs: $(STAMP)
	$(BIN)/python -m pipeline.ops.config_reference > docs/configuration.md

lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check pipeline connectors tests bench examples scripts
	$(BIN)/ruff format --check pipeline connectors tests bench examples scripts

typecheck: $(STAMP)
	$(BIN)/mypy

# PostgreSQL and Redis binaries for the sink tests (the fixtures start private servers).
services:
	bash scripts/ensure-services.sh

# pytest exits 5 when it collected nothing: that must fail, not pass.
# The engine's, ingest's and the wire formats' unit tests run a second time from source
# (HINDSIGHT_NATIVE=0): the compiled and Python forms must agree.
test: lint typecheck jars services native
	$(BIN)/python -m pytest tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no tests were collected" >&2; exit 1; fi; \
	[ $$rc -ne 0 ] && exit $$rc; \
	HINDSIGHT_NATIVE=0 $(BIN)/python -m pytest -q tests/unit/engine tests/unit/ingest tests/unit/wire

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

integration: jars services
	$(BIN)/python -m pytest tests/integration

stack-up: jars
	$(BIN)/hindsight stack up

stack-down: $(STAMP)
	$(BIN)/hindsight stack down

stack-status: $(STAMP)
	$(BIN)/hindsight stack status

bench: jars native
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	$(BIN)/python bench/rules_eval.py
	$(BIN)/python bench/worker_throughput.py
	$(BIN)/python bench/ingest_throughput.py
	$(BIN)/python bench/store_bench.py
	$(BIN)/python bench/latency.py
	$(BIN)/python bench/report.py

# Ten minutes of fixed-rate publishing (not part of make bench); the report picks it up when present.
soak: jars native
	$(BIN)/python bench/soak.py
	$(BIN)/python bench/report.py

clean:
	-$(BIN)/hindsight stack down
	rm -rf .hindsight $(VENV) build pipeline/engine/*.so pipeline/*/_*.so pipeline/engine/native.sha256
