"""Model names a user types (`--model production|base|VERSION`) -> a version to load.

With a registry (`--registry DIR`, default `deploy.registry_dir`, when it holds a registry.json),
names go through it first: a registry id (`v0003`, `v0000` = base) or an alias (`production`,
`proxy`, `candidate`, user tags). Without one, or for names it does not know: `base`;
`production` = the newest `runs/<experiment>/<batch>/deployed.json` of the DAG (the base when
nothing was deployed); a run-local version `<experiment>/<batch>` (its adapter under
`runs/<experiment>/versions/<batch>`); or the path of an adapter folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class UnknownModel(LookupError):
    """The name resolves to nothing; the message says what was looked for."""


def resolve_model(
    name: str, cfg: Any, registry: str | Path | None = None
) -> tuple[str, str | None]:
    """(version name, adapter folder or None for the base)."""
    found = _from_registry(name, registry or cfg.deploy.get("registry_dir"))
    return found if found is not None else _from_runs(name, cfg)


def _from_registry(name: str, root: str | Path | None) -> tuple[str, str | None] | None:
    from cift.registry import Registry
    from cift.registry.store import STATE, InvalidName, NotFound

    if not root or not (Path(root) / STATE).is_file():
        return None
    try:
        info = Registry(root).resolve(name)
    except (NotFound, InvalidName):
        return None
    return info.version, str(info.adapter_path) if info.adapter_path else None


def _from_runs(name: str, cfg: Any) -> tuple[str, str | None]:
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
        f"model {name!r}: not a registry id or alias, 'base', 'production', a version "
        f"'<experiment>/<batch>' with an adapter under {runs}/<experiment>/versions/, or an "
        "adapter folder"
    )
