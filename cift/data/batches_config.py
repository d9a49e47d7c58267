"""Adding an arriving batch to the active data config (batches are data, not code)."""

from __future__ import annotations

from pathlib import Path

from ruamel.yaml import YAML


def active_data_config(root: Path) -> Path:
    """conf/data/<name>.yaml of the data option params.yaml was composed with (`data.name`)."""
    params = YAML(typ="safe").load((root / "params.yaml").read_text())
    name = (params.get("data") or {}).get("name")
    path = root / "conf" / "data" / f"{name}.yaml"
    if not name or not path.is_file():
        raise FileNotFoundError(f"params.yaml: data.name: {name!r} has no conf/data/{name}.yaml")
    return path


def append_batch(config: Path, name: str, source: str) -> dict:
    """Append {name, source, prev=<last batch>, focus: []} to `batches:`, keeping the comments."""
    yaml = YAML()
    yaml.preserve_quotes = True
    doc = yaml.load(config.read_text())
    batches = doc.get("batches")
    if batches is None:
        raise KeyError(f"{config}: batches: missing")
    if any(b["name"] == name for b in batches):
        raise ValueError(f"{config}: batches: a batch named {name!r} exists already")
    entry = {"name": name, "source": source, "prev": batches[-1]["name"] if batches else "base"}
    entry["focus"] = []
    batches.append(entry)
    with config.open("w") as fh:
        yaml.dump(doc, fh)
    return entry
