# edge_min — the two commands a fresh machine needs are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DATA   ?= ./edge-data
BUILD_KEY ?= .cache/build-key.ed25519
# onnxruntime >= 1.32 otherwise writes a device id and a database under $HOME
export ORT_DISABLE_TELEMETRY := 1

MODEL  := models/out/text-classifier-lite.onnx

.PHONY: run test test-fast lint typecheck pytest bench bench-encryption bench-update bench-web wasm-setup web test-web models clean help system-deps manifest

help:            ## list targets
	@grep -hE '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

# The Debian packages each command needs (scripts/system-deps.sh): checked every time, in
# well under a second once present; installed as root or with passwordless sudo, otherwise
# one line names them and the command to install them.
SYSTEM_DEPS := bash scripts/system-deps.sh

$(STAMP): pyproject.toml
	@$(SYSTEM_DEPS) run
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/edge-min security manifest --write --key $(BUILD_KEY)
	touch $(STAMP)

# boot_integrity checks the program against a manifest signed at install time: here with a
# development build key made under .cache/ (docs/security.md: how a real build key is used).
manifest: $(STAMP) ## re-sign the source tree's program manifest (after editing edge_min/)
	$(BIN)/edge-min security manifest --write --key $(BUILD_KEY)

# --local-central: with the default sync.central_url, a local central answers there too.
run: $(STAMP)    ## set up and start the runtime on the embedded default (data in ./edge-data, API on 127.0.0.1:8000)
	$(BIN)/edge-min --data-dir $(DATA) run --local-central

$(MODEL): $(STAMP) models/build_text_classifier.py models/corpus/feedback.tsv models/corpus/lexicon.tsv
	$(PY) models/build_text_classifier.py --out models/out

models: $(MODEL) ## build text-classifier-lite (int8 ONNX) from the shipped corpus into models/out/

wasm-setup: system-deps ## install the pinned Pyodide npm package and the local pure-Python wheels it loads
	bash wasm/setup.sh

# The static, offline browser bundle (wasm/build_web.py): the page, its loader and worker,
# Pyodide from node_modules and the wheels, signed manifest included. Serve it with
# `python3 -m http.server -d dist/web` and open http://127.0.0.1:8000/.
web: wasm-setup manifest models ## build dist/web/: edge_min in a Web Worker under Pyodide, persisted in IndexedDB
	$(PY) wasm/build_web.py --out dist/web

test-web: web ## the browser target's tests in Debian's Chromium (also part of make test)
	$(BIN)/pytest -q tests/targets/test_web.py tests/targets/test_web_sync.py tests/targets/test_web_page.py

lint: $(STAMP)   ## ruff lint and format check
	$(BIN)/ruff check edge_min tests bench models wasm targets build/build_binary.py build/onefile.py build/signing.py
	$(BIN)/ruff format --check edge_min tests bench models wasm targets build/build_binary.py build/onefile.py build/signing.py

typecheck: $(STAMP) ## mypy on the package, and on targets/mcu against MicroPython's stubs
	$(BIN)/mypy
	$(MAKE) --no-print-directory typecheck-mcu

system-deps:     ## install the Debian packages make test needs (PostgreSQL, sshd, Node.js, gcc, libzstd, Chromium)
	@$(SYSTEM_DEPS) test

# The PostgreSQL tests of the central server use $$EDGE_MIN_TEST_PG, or start a local cluster;
# a failure of postgres.sh stops here with its own error, never with an empty DSN.
#
# Two pytest processes side by side, one per core: the browser suites (Chromium and Pyodide:
# mostly the renderer's CPU, about 5 minutes) and all the others (mostly subprocesses, waits
# and disk). The browser run's output is kept in .cache/pytest-browser.log and printed after
# the other's; either failing (or collecting nothing: exit 5) fails the target.
BROWSER_TESTS := web or pyodide
pytest: system-deps $(STAMP) wasm-setup models
	@dsn="$${EDGE_MIN_TEST_PG:-}"; \
	if [ -z "$$dsn" ]; then dsn="$$(bash scripts/postgres.sh)" || exit 1; fi; \
	echo "EDGE_MIN_TEST_PG=$$dsn"; \
	mkdir -p .cache; \
	EDGE_MIN_TEST_PG="$$dsn" $(BIN)/pytest -q -p no:cacheprovider -m "$(BROWSER_TESTS)" \
	  > .cache/pytest-browser.log 2>&1 & browser=$$!; \
	EDGE_MIN_TEST_PG="$$dsn" $(BIN)/pytest -q -m "not ($(BROWSER_TESTS))"; others=$$?; \
	wait $$browser; browser_rc=$$?; \
	echo "--- the browser suites ($(BROWSER_TESTS)), run beside the others: exit $$browser_rc"; \
	cat .cache/pytest-browser.log; \
	echo "--- exit codes: others $$others, browser suites $$browser_rc"; \
	[ "$$others" -eq 0 ] && [ "$$browser_rc" -eq 0 ]

test: system-deps lint typecheck pytest ## everything CI runs: lint, types, all tests (slow and Pyodide ones included)

test-fast: $(STAMP) models ## tests without the slow ones, for local iteration
	$(BIN)/pytest -q -m 'not slow and not pyodide'

bench: $(VENV)/.bench-stamp models ## benchmarks: ratios against raw baselines measured in the same run
	$(PY) bench/run.py

bench-encryption: $(STAMP) ## durable no-op steps with encryption at rest on vs off (also in make bench)
	$(PY) bench/bench_encryption.py

# BENCH_UPDATE_ARGS='--old A --new B --change TEXT': two gateway binaries instead of the stand-in.
# bsdiff4 and detools are compared only here: the bench extra, built against Python's headers.
$(VENV)/.bench-stamp: $(STAMP) pyproject.toml
	@$(SYSTEM_DEPS) bench
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

bench-web: web ## the browser tab in Chromium: cold/warm start, durable steps vs CPython, first-load bytes
	$(PY) bench/bench_web.py

bench-update: $(VENV)/.bench-stamp ## update deltas: zstd patch-from vs bsdiff4 and detools, size, apply time and memory
	$(PY) bench/bench_update.py $(BENCH_UPDATE_ARGS)

# The gateway binaries: make binary, binary-onnx, test-binary (build/binary.mk) and
# binary-arm64, test-binary-arm64 (build/arm64.mk, which reuses binary.mk's source list);
# make test-fresh, the README's two commands on a new Debian 12 root (build/fresh.mk).
include build/binary.mk build/arm64.mk build/fresh.mk build/firmware.mk build/mcu.mk

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
