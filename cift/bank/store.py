"""Import an external PEFT LoRA adapter into the registry as the next version, and list the bank.

An import is checked before anything is copied: safetensors only (the registry's own check),
the base identity — the sha256 of the base weight file, from the adapter's `cift_adapter.json`
or from `base_model_name_or_path` when that is a local folder — and, always, every tensor's name
and shape against the LoRA the adapter's own config builds on our base.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from cift.models.adapter_format import (
    CIFT_META,
    WEIGHTS,
    read_adapter_meta,
    read_lora_config,
    tensor_mismatch,
    write_adapter_meta,
)
from cift.registry import Registry
from cift.registry.store import Refused, check_adapter_folder


class ImportRefused(Refused):
    """An adapter that does not fit the base (identity or shapes); the message says which."""


def adapter_base_hash(folder: Path) -> tuple[str | None, str]:
    """(the base's weight hash the adapter names, how we know it) or (None, why not)."""
    from cift.models.loading import base_model_hash

    if (folder / CIFT_META).is_file():
        return read_adapter_meta(folder).get("base_hash"), CIFT_META
    config = read_lora_config(folder)
    base = config.get("base_model_name_or_path")
    if base and Path(base).is_dir() and any(Path(base).glob("*.safetensors")):
        return base_model_hash(Path(base)), f"base_model_name_or_path={base}"
    return None, f"base_model_name_or_path={base!r} is not a local folder"


def check_shapes(folder: Path, spec: Any) -> int:
    """Every tensor of the adapter exists with the same shape in the LoRA its config builds on
    our base; returns the number of tensors."""
    from peft import LoraConfig, get_peft_model
    from peft.utils import get_peft_model_state_dict
    from safetensors import safe_open

    config = read_lora_config(folder)
    if config.get("peft_type", "LORA") != "LORA":
        raise ImportRefused(
            f"{folder}/adapter_config.json: peft_type {config['peft_type']!r}, "
            "only LoRA adapters join the bank"
        )
    known = set(LoraConfig.__dataclass_fields__)
    lora = LoraConfig(**{k: v for k, v in config.items() if k in known})
    model = get_peft_model(spec.load(dtype="float32").model, lora)
    with safe_open(str(folder / WEIGHTS), "pt") as f:
        got = {k: f.get_slice(k).get_shape() for k in f.keys()}  # noqa: SIM118
    reason = tensor_mismatch(get_peft_model_state_dict(model), got)
    if reason:
        raise ImportRefused(f"{folder}/{WEIGHTS}: {reason} ({spec.name}, this LoRA config)")
    return len(got)


def import_adapter(
    registry: Registry, src: str | Path, name: str, spec: Any, command: str | None = None
) -> str:
    """Register `src` as the next vNNNN with `source: imported` and alias `name`; returns the id."""
    from cift.models.loading import base_model_hash

    src = check_adapter_folder(src)
    ours = base_model_hash(spec.local_dir())
    theirs, how = adapter_base_hash(src)
    if theirs is not None and theirs != ours:
        raise ImportRefused(
            f"{src}: trained on a different base ({how}: sha256 {theirs[:12]}…, "
            f"{spec.name} is {ours[:12]}…)"
        )
    check_shapes(src, spec)
    with tempfile.TemporaryDirectory(prefix=".import-") as tmp:
        staged = Path(tmp) / "adapter"
        shutil.copytree(src, staged)
        write_adapter_meta(
            staged,
            ours,
            {
                "source": "imported",
                "imported_from": str(src),
                "base_check": "sha256" if theirs else "shapes",
            },
        )
        version = registry.register(
            staged,
            {
                "source": "imported",
                "imported_from": str(src),
                "base_check": "sha256" if theirs else f"shapes ({how})",
            },
            command=command,
        )
    registry.tag(version, name, reason="bank import", command=command)
    return version


def bank(registry: Registry) -> list[dict]:
    """Every version with the registry's keys plus `source` (base, dag, imported, …)."""
    return [
        r | {"source": r.get("source") or ("base" if r["version"] == "v0000" else "dag")}
        for r in registry.list()
    ]
