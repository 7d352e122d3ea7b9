# The aarch64 gateway binary (issue 7, part 3), built on this x86_64 machine without Docker.
# Included by the top-level Makefile after build/binary.mk (it uses BINARY_SRC from there,
# and STAMP/BIN from the Makefile): `include build/binary.mk build/arm64.mk`.
#
# build/arm64/build.sh does it end to end, as root: a Debian bookworm arm64 root through
# qemu-user-static (.cache/arm64-root, made once, ~6 min), Nuitka inside it with the options
# of build/build_binary.py, and the host's native zig as the C compiler (see
# build/arm64/zig-aarch64-cc). The phase times go to .cache/arm64-build-times.log.

ARM64_BINARY := dist/edge-min-linux-aarch64
ARM64_ONNX   := dist/edge-min-linux-aarch64-onnx
ARM64_ROOT   ?= $(CURDIR)/.cache/arm64-root
ARM64_SRC    := $(BINARY_SRC) $(wildcard build/arm64/*.sh build/arm64/*.py) \
                build/arm64/zig-aarch64-cc build/arm64/requirements-host.txt \
                build/arm64/requirements-onnx.txt

.PHONY: binary-arm64 test-binary-arm64 binary-arm64-onnx test-binary-arm64-onnx

$(ARM64_BINARY): $(ARM64_SRC)
	ARM64_ROOT=$(ARM64_ROOT) bash build/arm64/build.sh --variant base

binary-arm64: $(ARM64_BINARY) ## build dist/edge-min-linux-aarch64 in an emulated arm64 root (first time ~22 min, rebuild ~6)

# Under qemu-aarch64-static: it starts, has every module, runs a workflow, answers /health.
test-binary-arm64: $(STAMP) $(ARM64_BINARY) ## build the aarch64 binary and run it under qemu
	bash build/arm64/binfmt.sh
	EDGE_MIN_BIN_ARM64=$(ARM64_BINARY) EDGE_MIN_ARM64_ROOT=$(ARM64_ROOT) \
	  $(BIN)/pytest -q -p no:cacheprovider tests/targets/test_binary_arm64.py

# The -onnx variant for aarch64 (onnxruntime 1.27 inside: see build/arm64/requirements-onnx.txt).
# Not part of ci-full: the first build adds about 20 minutes under emulation.
$(ARM64_ONNX): $(ARM64_SRC)
	ARM64_ROOT=$(ARM64_ROOT) bash build/arm64/build.sh --variant onnx

binary-arm64-onnx: $(ARM64_ONNX) ## build dist/edge-min-linux-aarch64-onnx (onnxruntime 1.27) in the arm64 root

# Under qemu: every module, and text-classifier-lite classifying through the binary's worker.
test-binary-arm64-onnx: $(STAMP) $(ARM64_ONNX) models ## build the aarch64 -onnx binary and run it under qemu
	bash build/arm64/binfmt.sh
	EDGE_MIN_BIN_ARM64=$(ARM64_ONNX) EDGE_MIN_ARM64_ROOT=$(ARM64_ROOT) \
	  $(BIN)/pytest -q -p no:cacheprovider tests/targets/test_binary_arm64.py
