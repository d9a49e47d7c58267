"""Records what a DVC stage process reads and which `cift` modules it imports (tests only).

On PYTHONPATH only in the tiny-DAG test, with CIFT_AUDIT_DIR set: every `open` for reading goes
through an audit hook (`sys.addaudithook`), and at exit the stage writes
`<CIFT_AUDIT_DIR>/<DVC_STAGE>.json` = {"stage", "cwd", "reads", "modules"}, so the test can
compare them with the stage's `deps` in dvc.yaml.
"""

from __future__ import annotations

import atexit
import json
import os
import sys

_DIR = os.environ.get("CIFT_AUDIT_DIR")
_STAGE = os.environ.get("DVC_STAGE")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC

# The pytest workers run one OpenMP thread each (tests/conftest.py); a stage that starts while the
# other worker waits for this DAG has that worker's core too. Set before torch is imported.
_SPARE = os.environ.get("CIFT_SPARE_CORE")
if _SPARE and os.path.exists(_SPARE):
    os.environ["OMP_NUM_THREADS"] = str(len(os.sched_getaffinity(0)))


def _is_read(mode: object, flags: object) -> bool:
    if isinstance(mode, str):
        return not any(c in mode for c in "wax+")
    return isinstance(flags, int) and not flags & _WRITE_FLAGS


def _install(folder: str, stage: str) -> None:
    reads: set[str] = set()

    def hook(event: str, args: tuple) -> None:
        if event != "open" or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        mode, flags = (args[1], args[2]) if len(args) >= 3 else (None, 0)
        if _is_read(mode, flags):
            path = os.fsdecode(args[0])
            reads.add(path if os.path.isabs(path) else os.path.join(os.getcwd(), path))

    def dump() -> None:
        modules = sorted(
            m.__file__
            for name, m in list(sys.modules.items())
            if (name == "cift" or name.startswith("cift.")) and getattr(m, "__file__", None)
        )
        record = {
            "stage": stage,
            "cwd": os.getcwd(),
            # files only: listing a folder (an output's parent, a glob) reads no content
            "reads": sorted(p for p in reads if os.path.isfile(p)),
            "modules": modules,
            "argv": sys.argv,
        }
        name = stage.replace("/", "_")
        with open(os.path.join(folder, f"{name}.json"), "w", encoding="utf-8") as fh:
            json.dump(record, fh)

    sys.addaudithook(hook)
    atexit.register(dump)


if _DIR and _STAGE:
    _install(_DIR, _STAGE)
