"""Model names a user types (`--model production|base|VERSION`) -> a version to load.

Accepted: `base` (the original model, no adapter); `production` (the last deployed version of
the main experiment's DAG: the newest `runs/<experiment>/<batch>/deployed.json`); a run-local
version `<experiment>/<batch>` (its adapter under `runs/<experiment>/versions/<batch>`); or the
path of an adapter folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class UnknownModel(LookupError):
    """The name resolves to nothing; the message says what was looked for."""


def resolve_model(name: str, cfg: Any) -> tuple[str, str | None]:
    """(version name, adapter folder or None for the base)."""
    from cift.deploy.pointers import pointer_path, version_dir

    runs, exp = Path(cfg.paths.runs), cfg.experiment_name
    if name in ("base", "v0000", f"{exp}/base"):
        return f"{exp}/base", None
    if name == "production":
        for batch in reversed([b.name for b in cfg.data.batches]):
            path = pointer_path(runs, exp, batch, "deployed")
            if path.is_file():
                pointer = json.loads(path.read_text(encoding="utf-8"))
                return pointer["version"], pointer.get("adapter_path")
        return f"{exp}/base", None  # nothing deployed yet: production is the base
    parts = name.split("/")
    if len(parts) == 2 and all(p and p not in (".", "..") for p in parts):
        folder = version_dir(runs, parts[0], parts[1])
        if (folder / "adapter_config.json").is_file():
            return name, str(folder)
    folder = Path(name)
    if (folder / "adapter_config.json").is_file():
        return str(folder), str(folder)
    raise UnknownModel(
        f"model {name!r}: not 'base', 'production', a version '<experiment>/<batch>' with an "
        f"adapter under {runs}/<experiment>/versions/, or an adapter folder"
    )
