# The firmware target (issue [firmware]): bootable UEFI disk images with A/B root slots.
# Included by the top-level Makefile after binary.mk and arm64.mk (their BINARY and
# ARM64_BINARY are each image's runtime). firmware/build.sh does the work; firmware/deps.sh
# installs its tools (QEMU, OVMF/AAVMF, mtools, squashfs-tools ...) and adds the arm64
# architecture to apt so the arm64 kernel, libc and systemd-boot can be downloaded.

FIRMWARE_DIR    := dist/firmware
FIRMWARE_X86    := $(FIRMWARE_DIR)/edge-min-x86_64.img
FIRMWARE_ARM64  := $(FIRMWARE_DIR)/edge-min-aarch64.img
FIRMWARE_SRC    := $(wildcard firmware/*.sh) $(wildcard targets/firmware/*.py)
FIRMWARE_TESTS  ?=

.PHONY: firmware firmware-x86_64 firmware-aarch64 test-firmware test-firmware-x86_64 test-firmware-aarch64 firmware-deps bench-firmware

firmware-deps:
	@bash firmware/deps.sh

# virt-firmware (PyPI; not in Debian 12) enrolls the Secure Boot keys into the UEFI
# variable store offline: firmware/secureboot.sh vars.
VIRT_FW := $(VENV)/.virt-firmware-stamp
$(VIRT_FW): $(STAMP)
	$(BIN)/pip install --quiet 'virt-firmware==26.10'
	touch $@

$(FIRMWARE_X86): $(BINARY) $(FIRMWARE_SRC) $(VIRT_FW)
	@bash firmware/deps.sh
	bash firmware/build.sh image x86_64 $(BINARY) $@

$(FIRMWARE_ARM64): $(ARM64_BINARY) $(FIRMWARE_SRC) $(VIRT_FW)
	@bash firmware/deps.sh
	bash firmware/build.sh image aarch64 $(ARM64_BINARY) $@

firmware-x86_64: $(FIRMWARE_X86) ## the x86_64 firmware image (dist/firmware/edge-min-x86_64.img)
firmware-aarch64: $(FIRMWARE_ARM64) ## the aarch64 firmware image (needs make binary-arm64)
firmware: firmware-x86_64 firmware-aarch64 ## both firmware images: GPT, ESP + systemd-boot, A/B squashfs slots, ext4 data

# Under QEMU's software emulation: boot to /health, power cuts, A/B updates and fallback,
# quick power cycles, a bad seed, Secure Boot refusals (tests/firmware). The images are
# built once and copied (sparse) for each test. Two pytest processes side by side, one per
# core (each QEMU runs one emulated CPU on one host thread): the power-cut test, which
# boots the image 21 times in a row, and all the others; the second's output is kept in
# .cache/firmware/pytest-others.log and printed after. FIRMWARE_TESTS passes more pytest
# options to both (e.g. -x).
FIRMWARE_PYTEST = EDGE_MIN_FIRMWARE_DIR=$(FIRMWARE_DIR) $(BIN)/pytest -q -p no:cacheprovider \
  -m firmware tests/firmware $(FIRMWARE_TESTS)
define firmware_tests
	@mkdir -p .cache/firmware; rm -f .cache/firmware/boot-times.jsonl; \
	$(1) $(FIRMWARE_PYTEST) -k "not power_cuts" > .cache/firmware/pytest-others.log 2>&1 & \
	others=$$!; \
	$(1) $(FIRMWARE_PYTEST) -k power_cuts; cuts=$$?; \
	wait $$others; others_rc=$$?; \
	echo "--- the other firmware tests, run beside the power cuts: exit $$others_rc"; \
	cat .cache/firmware/pytest-others.log; \
	echo "--- exit codes: power cuts $$cuts, others $$others_rc"; \
	[ "$$cuts" -eq 0 ] && [ "$$others_rc" -eq 0 ]
endef

test-firmware: $(STAMP) firmware ## build both images and run tests/firmware under QEMU
	$(call firmware_tests,)

test-firmware-x86_64: $(STAMP) firmware-x86_64 ## the x86_64 image's tests only
	$(call firmware_tests,EDGE_MIN_FIRMWARE_ARCHES=x86_64)

# The aarch64 image boots to a healthy API (the A/B, power-cut and Secure Boot tests run on
# the x86_64 image: the same code, and aarch64's emulation is slower still).
test-firmware-aarch64: $(STAMP) firmware-aarch64 ## the aarch64 image's boot test
	EDGE_MIN_FIRMWARE_ARCHES=aarch64 $(FIRMWARE_PYTEST) -k aarch64

bench-firmware: $(STAMP) ## the images' size, power-on-to-healthy time and idle memory under QEMU (after make firmware)
	$(PY) bench/bench_firmware.py
