"""The MCU shim's entry: ``micropython main.py CONFIG.json [--check-log]`` (docs/mcu.md).

From the source tree, ``micropython -X heapsize=64K targets/mcu/main.py CONFIG.json`` runs
the compiled modules of ``make mcu`` (``dist/mcu``) when they are there and not older than
the source: compiling the source in the device's RAM needs about twice a 64 KB heap.
On a board, copy ``dist/mcu/`` to the flash root (``mpremote cp -r dist/mcu/. :``) and write
the config's path into ``boot_config.txt``: the board runs ``main.py`` at boot.
"""

import sys


def _compiled() -> str | None:
    """``dist/mcu`` beside this source tree, if it is built from what is here now."""
    import os

    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    built = here + "/../../dist/mcu"
    try:
        os.stat(built + "/edge_mcu/app.mpy")
    except OSError:
        return None
    for name in os.listdir(here + "/edge_mcu"):
        if name.endswith(".py"):
            try:
                stale = (
                    os.stat(built + "/edge_mcu/" + name[:-3] + ".mpy")[8]
                    < os.stat(here + "/edge_mcu/" + name)[8]
                )
            except OSError:
                stale = True
            if stale:
                print("mcu: dist/mcu is older than the source (run make mcu): running the source")
                return None
    return built


if __name__ == "__main__":
    argv = sys.argv
    if len(argv) < 2:
        try:
            with open("boot_config.txt") as f:
                argv = ["main.py", f.read().strip()]
        except OSError:
            pass
    path = _compiled()
    if path is not None:
        sys.path.insert(0, path)
    del path, _compiled
    if len(argv) < 2:
        print("usage: micropython main.py CONFIG.json [--check-log]")
        sys.exit(2)
    # The two buffers the program keeps for life (a push's payload, an answer) come first,
    # at the bottom of the heap, before any module's code can fragment it.
    buffers = (bytearray(3072), bytearray(2048))
    # The checker runs first and alone: its code's heap is given back before the program's
    # modules load.
    from edge_mcu import config

    try:
        conf = config.load(argv[1])
    except config.ConfigError as exc:
        print("mcu: config error: %s" % exc)
        sys.exit(2)
    import gc

    import edge_mcu

    del config
    edge_mcu.unload("config")
    edge_mcu.unload("agents")

    gc.collect()
    from edge_mcu import app

    sys.exit(app.main(conf, argv, buffers))
