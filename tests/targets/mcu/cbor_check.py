# MicroPython: decode each hex line of CBOR with the shim's decoder, encode it back with its
# encoder, print the hex (tests/targets/test_mcu.py compares with CPython's cbor2).
import sys

sys.path.insert(0, sys.argv[1])
from edge_mcu import cbor

with open(sys.argv[2]) as f:
    for line in f:
        data = bytes.fromhex(line.strip())
        print(cbor.dumps(cbor.loads(data)).hex())
