# The gateway binary (issue 7). Included by the top-level Makefile: `include build/binary.mk`.
# It uses PYTHON, STAMP and BIN from there. Nothing here downloads at build time beyond the
# pip and apt installs of its own recipes; Nuitka itself runs offline (build/build_binary.py).

BUILD_VENV   := .cache/nuitka-venv
BUILD_PY     := $(BUILD_VENV)/bin/python
BUILD_STAMP  := $(BUILD_VENV)/.installed-stamp
BINARY_ARCH  := $(shell uname -m | sed 's/amd64/x86_64/;s/arm64/aarch64/')
BINARY       := dist/edge-min-linux-$(BINARY_ARCH)
BINARY_ONNX  := $(BINARY)-onnx
BINARY_SRC   := $(shell find edge_min targets/gateway targets/firmware -name '*.py' -o -name '*.sql' -o -name '*.yaml' -o -name '*.html' -o -name '*.css' -o -name '*.js' -o -name '*.c' -o -name '*.h') \
                build/build_binary.py build/onefile.py build/signing.py build/requirements.txt \
                build/requirements-onnx.txt build/pycryptodome.nuitka-package.config.yml

.PHONY: binary binary-onnx test-binary

# The signing key (build/signing.py, build/README.md "Signing"): a release key's PEM, or an
# HSM's public key and signing command; none of them: the development key in .cache/signing/.
# Set in the environment or on the command line (make binary EDGE_MIN_SIGNING_KEY=...).
# EDGE_MIN_DOWNLOAD_FROM is where the launcher's refusal sends the user for a good copy.
export EDGE_MIN_SIGNING_KEY EDGE_MIN_SIGNING_PUBKEY EDGE_MIN_SIGN_COMMAND EDGE_MIN_DOWNLOAD_FROM

# gcc, patchelf (Nuitka sets the rpath of the bundled libraries), ccache (rebuilds take
# ~1 minute instead of ~5) and libzstd-dev (the launcher links libzstd.a) from Debian; a
# no-op where they are installed.
$(BUILD_VENV)/.tools-stamp:
	@command -v gcc >/dev/null && command -v patchelf >/dev/null && command -v ccache >/dev/null \
	  && [ -f /usr/include/zstd.h ] || \
	  { apt-get update -qq && apt-get install -y -qq gcc patchelf ccache libzstd-dev; }
	@mkdir -p $(BUILD_VENV) && touch $@

# A venv of its own: Nuitka and only the packages the binary carries, so nothing from the
# dev venv (pytest, onnx, ...) can slip into it.
$(BUILD_STAMP): build/requirements.txt $(BUILD_VENV)/.tools-stamp
	$(PYTHON) -m venv $(BUILD_VENV)
	$(BUILD_VENV)/bin/pip install --quiet --upgrade pip
	$(BUILD_VENV)/bin/pip install --quiet -r build/requirements.txt
	touch $@

$(BINARY): $(BUILD_STAMP) $(BINARY_SRC)
	$(BUILD_PY) build/build_binary.py --variant base

binary: $(BINARY) ## build dist/edge-min-linux-<arch> with Nuitka --onefile (about 5 min on 2 cores)

# The second variant with numpy and onnxruntime inside, for gateways that run ONNX agents;
# its own venv, so the base binary's venv stays exactly build/requirements.txt.
ONNX_VENV  := .cache/nuitka-venv-onnx
ONNX_STAMP := $(ONNX_VENV)/.installed-stamp

$(ONNX_STAMP): build/requirements.txt build/requirements-onnx.txt $(BUILD_VENV)/.tools-stamp
	$(PYTHON) -m venv $(ONNX_VENV)
	$(ONNX_VENV)/bin/pip install --quiet --upgrade pip
	$(ONNX_VENV)/bin/pip install --quiet -r build/requirements.txt -r build/requirements-onnx.txt
	touch $@

$(BINARY_ONNX): $(ONNX_STAMP) $(BINARY_SRC)
	$(ONNX_VENV)/bin/python build/build_binary.py --variant onnx

binary-onnx: $(BINARY_ONNX) ## build dist/edge-min-linux-<arch>-onnx (numpy + onnxruntime inside)

# The binary's own tests, then the CLI, API, monitoring, sync, workflow and recovery suites
# run against the binary (tests/conftest.py's run_cli and runtime_process start
# $$EDGE_MIN_BIN instead of python; the central they sync with runs from the source tree).
# test_kill9_install is left out: its devices run python payloads, never the binary (it runs
# in make test).
BINARY_SUITES := tests/targets/test_binary.py tests/targets/test_binary_update.py \
                 tests/targets/test_launcher.py \
                 tests/integration/test_cli.py tests/integration/test_workflows_e2e.py \
                 tests/integration/test_monitoring_api.py tests/integration/test_runtime_sync.py \
                 tests/recovery/test_engine_recovery.py \
                 tests/recovery/test_kill9_writes.py tests/recovery/test_kill9_reseal.py

.PHONY: bench-binary test-binary-onnx ci-full

test-binary: $(STAMP) $(BINARY) ## build the binary and run the test suites against it
	EDGE_MIN_BIN=$(BINARY) $(BIN)/pytest -q $(BINARY_SUITES)

# The -onnx variant runs the spec's ONNX agent end to end (feedback-triage, text-classifier-lite).
test-binary-onnx: $(STAMP) $(BINARY_ONNX) models ## build the -onnx binary and run the ONNX and binary suites against it
	EDGE_MIN_BIN=$(BINARY_ONNX) $(BIN)/pytest -q tests/targets/test_binary.py \
	  tests/integration/test_feedback_triage.py

# File size, first and cached start to /health, idle RSS after 60 s and RSS with 5 workflows,
# each beside `python -m edge_min` from the source tree; writes its section of docs/benchmarks.md.
bench-binary: $(STAMP) $(BINARY) ## benchmark the binary (and -onnx, if built) against the source tree
	$(PY) bench/bench_binary.py

# What CI runs (.ci/run). The README's `make test` runs once, in a clean Debian 12 root with a
# fresh clone (make test-fresh, build/fresh.mk: it installs every system package and service
# itself, and checks `make run` too), not a second time on the host: the same 3,300 tests twice
# would push CI past an hour on 2 cores. Then the x86_64 binary built from scratch and the
# suites run against it (system-deps first: they use curl and sshd like make test), then the
# aarch64 binary built under qemu and tested there (build/arm64/ci.sh, ~23 minutes with a
# fresh root), and the firmware images built from both binaries and booted under QEMU: the
# x86_64 image's tests beside the aarch64 build (firmware/ci.sh runs both). EDGE_MIN_CI=fast runs plain `make test` on the host instead.
ci-full: system-deps test-fresh test-binary ## make test in a clean root (test-fresh), both gateway binaries built and tested, the firmware images
	bash firmware/ci.sh
