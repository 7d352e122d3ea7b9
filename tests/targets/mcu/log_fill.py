# MicroPython: append N records to the flash log of DATA_DIR (tests/targets/test_mcu.py).
import sys

sys.path.insert(0, sys.argv[1])
from edge_mcu.flashlog import FlashLog

log = FlashLog(sys.argv[2], 65536, int(sys.argv[4]))
for i in range(int(sys.argv[3])):
    log.append((1796000000000 + i, "temp", 20.0 + i, {"alerts": [], "hot": {"triggered": False}}))
log.close()
print("LAST", log.last_seq)
