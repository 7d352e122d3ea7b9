"""A process that rotates and re-seals a database forever, to be killed with SIGKILL.

Run as ``python -m tests.recovery.reseal_worker DATA_DIR BATCH``; prints ``ready`` once the
store is open. Each cycle: a new key, a pass re-sealing every value under it in small
transactions, the retired key deleted, a pass back to plaintext, a pass sealing it again.
"""

from __future__ import annotations

import sys

from edge_min.config import load_config
from edge_min.runtime import Paths
from edge_min.security.atrest import open_device_store
from edge_min.security.keyring import SealingCipher
from edge_min.security.rotation import PLAIN, Resealer, retire


def main(root: str, batch: int) -> None:
    """Cycle until killed."""
    config = load_config(None)
    with open_device_store(config, Paths.resolve(config, root)) as store:
        assert isinstance(store.cipher, SealingCipher)
        ring = store.cipher.ring
        print("ready", flush=True)
        while True:
            ring.rotate(store.raw)
            Resealer(ring, store.raw, batch=batch).run()
            retire(ring, store.raw, store.clock.time(), grace=0.0)
            Resealer(ring, store.raw, mode=PLAIN, batch=batch).run()
            Resealer(ring, store.raw, batch=batch).run()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
