"""Update deltas: size as a share of the full bundle, apply time and apply peak memory.

Run ``python bench/bench_update.py`` (``make bench-update``; ``--no-write`` leaves
docs/benchmarks.md alone; ``--old A --new B`` measures two gateway binaries, ``--change
TEXT`` says in the report what changed between them). Two payloads, each as an old and a
new version with a one-module change:

- **package**: the from-source package (``infra/scripts/build_edge_package.sh
  --from-source``) of this checkout, built in a scratch copy, then built again after one
  function is added to ``edge_min/units.py``; the payloads are the two packages' tars.
- **gateway binary** (``--old PATH --new PATH``): two builds of ``make binary``, the second
  after a one-module change (how the table in docs/benchmarks.md was made: docs/updates.md
  "Deltas"). Measured on the two files as shipped (the onefile: launcher + a zstd
  level-19 payload, ``edge_min/update/onefile.py``) with edge_min's encoding for them,
  ``zstd-onefile`` (the delta of their expanded forms; applying expands the installed
  binary, decodes, and recompresses the records into the signed file), then the plain
  codecs on the shipped files and on the expanded forms themselves (``onefile.expand``:
  the launcher, the decoded records, the signature and trailer). Every share is of the
  full bundle of the new file as shipped.
- **binary stand-in** (without ``--old``/``--new``): a large native library stands in for
  the binary: onnxruntime's ``onnxruntime_pybind11_state`` .so from the venv (~37 MB),
  with a 4 KiB insertion and a 60 KiB region replaced by code from elsewhere in the file
  (a module recompiled, the rest shifted).

For each, the delta is made by edge_min (zstd patch-from, ``edge_min.update.delta``) and,
with ``--compare`` (what ``make bench-update`` runs), by bsdiff4 and detools (bsdiff
algorithm, lzma) for comparison. The full bundle is ``make_bundle`` without a delta (xz).
Applying runs in a fresh subprocess per method; its peak memory is that process's
``VmHWM`` less the same process's before the apply, with the library imported (the
baseline).
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, row, scratch_dir, table, write_section

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
GOAL = 0.10  # a one-module delta at most 10% of the full bundle
STAND_IN = "onnxruntime/capi/onnxruntime_pybind11_state"
NAMES = {
    "zstd": "zstd patch-from",
    "onefile": "zstd-onefile (patch-from of the expanded forms, rebuilt and recompressed)",
}

_APPLY = {
    "onefile": (
        "from edge_min.update import delta",
        "with open(D, 'rb') as d, open(O, 'wb') as o: delta.apply_onefile_delta(B, d, o, "
        "max_output=1 << 40, name='bench', workdir=O.parent)",
    ),
    "zstd": (
        "from edge_min.update import delta",
        "with open(D, 'rb') as d, open(O, 'wb') as o: delta.apply_delta(B, d, o, "
        "max_output=1 << 40, name='bench')",
    ),
    "bsdiff4": ("import bsdiff4", "bsdiff4.file_patch(str(B), str(O), str(D))"),
    "detools": (
        "import detools",
        "with open(B, 'rb') as b, open(D, 'rb') as d, open(O, 'wb') as o: "
        "detools.apply_patch(b, d, o)",
    ),
}


def _make(method: str, old: Path, new: Path, out: Path) -> float:
    """Seconds to write the delta ``old`` -> ``new`` into ``out``."""
    began = time.perf_counter()
    if method == "onefile":
        from edge_min.update.delta import make_onefile_delta

        work = out.parent / "onefile-work"
        work.mkdir(exist_ok=True)
        make_onefile_delta(old, new, out, work)
    elif method == "zstd":
        from edge_min.update.delta import make_delta

        make_delta(old, new, out)
    elif method == "bsdiff4":
        import bsdiff4

        bsdiff4.file_diff(str(old), str(new), str(out))
    else:
        import detools

        with open(old, "rb") as a, open(new, "rb") as b, open(out, "wb") as p:
            detools.create_patch(a, b, p, compression="lzma", algorithm="bsdiff")
    return time.perf_counter() - began


def _apply(method: str, base: Path, delta: Path, out: Path) -> tuple[float, int, int]:
    """Seconds, peak RSS (KiB) and baseline RSS (KiB) of applying in a fresh process."""
    imp, call = _APPLY[method]
    setup = f"import time\nfrom pathlib import Path\n{imp}\n"
    setup += f"B, D, O = Path({str(base)!r}), Path({str(delta)!r}), Path({str(out)!r})\n"
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across fork and exec, so a child of this
    # (large) process would report our peak as its own; exec gives it a fresh VmHWM.
    rss = "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))"
    code = f"{setup}{rss}\nt = time.perf_counter()\n{call}\nprint(time.perf_counter() - t)\n{rss}\n"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    before, seconds, after = done.stdout.split()
    return float(seconds), int(after), int(before)


def package_payloads(tmp: Path) -> tuple[Path, Path]:
    """The two from-source package tars: this checkout, and it with one module changed."""
    tree = tmp / "tree"
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "edge_min", "pyproject.toml", "README.md",
         "infra", "targets", "docs"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for name in files:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tree / name)
    out: list[Path] = []
    for i in range(2):
        if i == 1:
            units = tree / "edge_min" / "units.py"
            units.write_text(units.read_text() + "\n\ndef _bench_added() -> int:\n    return 1\n")
        gz = tmp / f"pkg{i}.tar.gz"
        subprocess.run(
            ["bash", str(tree / "infra/scripts/build_edge_package.sh"), "--from-source", "-o",
             str(gz)],
            check=True, capture_output=True, env=dict(os.environ, EDGE_PYTHON=sys.executable),
        )  # fmt: skip
        tar = tmp / f"pkg{i}.tar"
        tar.write_bytes(gzip.decompress(gz.read_bytes()))
        out.append(tar)
    return out[0], out[1]


def stand_in_payloads(tmp: Path) -> tuple[Path, Path]:
    """A large .so as the old binary, and it with one region changed as the new one."""
    import onnxruntime

    lib = next(Path(onnxruntime.__file__).parent.glob("capi/onnxruntime_pybind11_state*.so"))
    data = lib.read_bytes()
    mid = len(data) // 2
    rnd = bytes((i * 2654435761 >> 13) & 0xFF for i in range(4096))
    new = data[:mid] + rnd + data[1_000_000:1_060_000] + data[mid + 60_000 :]
    old_p, new_p = tmp / "old.so", tmp / "new.so"
    old_p.write_bytes(b"\x7fELF" + data[4:])
    new_p.write_bytes(b"\x7fELF" + new[4:])
    return old_p, new_p


def expanded_form(binary: Path, out: Path) -> Path | None:
    """The expanded form of a packed gateway binary (``edge_min.update.onefile.expand``) in
    ``out``; None when ``binary`` has no edge-min trailer."""
    from edge_min.update import onefile

    if not onefile.is_onefile(binary):
        return None
    onefile.expand(binary, out)
    return out


def _full_bundle(new: Path, tmp: Path) -> int:
    from edge_min.update.bundle import make_bundle
    from edge_min.update.keys import KeysDir, init_keys

    kdir = tmp / "keys"
    keys = KeysDir.load(kdir) if kdir.exists() else init_keys(kdir, now=time.time())
    out = tmp / "full.emub"
    made = make_bundle(
        new, version="1.0.0", keys=keys, arch="x86_64", now=time.time(), expires_in=86400.0,
        out=out,
    )  # fmt: skip
    return int(made["bundle_length"])


def measure(
    label: str,
    old: Path,
    new: Path,
    tmp: Path,
    methods: Sequence[str],
    shipped: Path | None = None,
    mine: str | None = "zstd",
) -> list[Row]:
    """Rows for one payload: each method's delta share, make and apply time, apply memory.

    The share is of the full bundle of ``shipped`` (default: ``new`` itself); ``mine`` is
    the method edge_min uses for this payload (its row is held to the goal).
    """
    full = _full_bundle(shipped or new, tmp)
    rows: list[Row] = []
    for method in methods:
        delta, out = tmp / f"delta.{method}", tmp / f"out.{method}"
        make_s = _make(method, old, new, delta)
        apply_s, peak, base_rss = _apply(method, old, delta, out)
        assert out.read_bytes() == new.read_bytes(), f"{method} rebuilt another payload"
        share = delta.stat().st_size / full
        ours = method == mine
        name = NAMES.get(method, method)
        rows.append(
            row(
                f"update delta, {label} ({new.stat().st_size / 1e6:.1f} MB uncompressed), "
                f"{f'edge_min: {name}' if ours else name}: delta vs full bundle "
                f"(make {make_s:.1f} s; apply {apply_s:.2f} s, peak RSS +"
                f"{(peak - base_rss) / 1024:.0f} MB over {base_rss / 1024:.0f} MB)",
                f"{delta.stat().st_size / 1e3:,.1f} kB ({share:.2%})",
                f"{full / 1e6:.2f} MB",
                None,
                "≤ 10% of the full bundle" if ours else "—",
                share <= GOAL if ours else None,
            )
        )
        delta.unlink()
        out.unlink()
    return rows


def run(compare: bool = False, old: Path | None = None, new: Path | None = None) -> list[Row]:
    """The rows: the package and the binary (or its stand-in), zstd (and the others)."""
    methods = ("zstd", "bsdiff4", "detools") if compare else ("zstd",)
    rows: list[Row] = []
    with scratch_dir() as d:
        tmp = Path(d)
        old_pkg, new_pkg = package_payloads(tmp)
        rows += measure("from-source package tar", old_pkg, new_pkg, tmp, methods)
        if old is not None and new is not None:
            x_old = expanded_form(old, tmp / "old.expanded")
            x_new = expanded_form(new, tmp / "new.expanded")
            onefiles = x_old is not None and x_new is not None
            rows += measure(f"gateway binary as shipped (onefile, {new.name})", old, new, tmp,
                            ("onefile", *methods) if onefiles else methods,
                            mine="onefile" if onefiles else "zstd")  # fmt: skip
            if x_old is not None and x_new is not None:
                label = "gateway binary, expanded forms (plain codecs)"
                rows += measure(label, x_old, x_new, tmp, methods, shipped=new, mine=None)
        else:
            so_old, so_new = stand_in_payloads(tmp)
            rows += measure("binary stand-in (onnxruntime .so)", so_old, so_new, tmp, methods)
    return rows


def _path(args: list[str], flag: str) -> Path | None:
    if flag not in args:
        return None
    if args.index(flag) + 1 >= len(args):
        raise SystemExit(f"bench_update: {flag} needs a path")
    return Path(args[args.index(flag) + 1])


def main(argv: Sequence[str] | None = None) -> int:
    """Print the rows; write them as the ``update`` section of docs/benchmarks.md."""
    from common import machine

    args = list(sys.argv[1:] if argv is None else argv)
    old = _path(args, "--old") or _path(args, "--binary")  # --binary: the older spelling
    new = _path(args, "--new")
    change = args[args.index("--change") + 1] if "--change" in args[:-1] else ""
    if (old is None) != (new is None):
        raise SystemExit("bench_update: give both --old PATH and --new PATH, or neither")
    for path in (old, new):
        if path is not None and not path.is_file():
            raise SystemExit(f"bench_update: {path} is not a file (a built binary or payload)")
    host = machine()
    rows = run(compare="--no-compare" not in args, old=old, new=new)
    text = table(rows)
    print(text)
    if "--no-write" not in args:
        write_section(
            DOC,
            "update",
            "## Update deltas (`make bench-update`)\n\n"
            f"Measured {host['date']} on {host['machine']} ({host['processor']}), "
            f"{host['cpus']} CPUs, {host['python']}; load before: {host['load']}. "
            "One-module changes; see `bench/bench_update.py` for what each payload is. "
            + (
                f"The binary rows: `--old {old}` and `--new {new}`, two `make binary` builds"
                + (f" ({change})" if change else "")
                + ". "
                if old is not None
                else "The binary rows are a stand-in: no gateway binary was given "
                "(`--old`, `--new`). "
            )
            + "Peak RSS is the apply process's `VmHWM` above the same "
            "interpreter with the library imported. The choice and why: docs/updates.md "
            '"Deltas".\n\n' + text,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
