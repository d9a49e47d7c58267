"""The adapter folder format, in one torch-free module: what training writes, the registry copies,
the bank mixes and every loader reads.

A folder holds `adapter_model.safetensors` (the only weights ever loaded), `adapter_config.json`
(PEFT's LoRA config; what `PeftModel.from_pretrained` and vLLM read) or `moe_config.json` (a
mixture of LoRA experts, `cift.models.moe`), and `cift_adapter.json` {base_hash, metadata}: the
sha256 of the base weights it was trained on, checked before any load. A version's identity is
the sha256 of its weights (`adapter_digest`). Importing this module loads neither torch nor
Lightning, so the registry and the CLI stay fast.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
CIFT_META = "cift_adapter.json"
MOE_CONFIG = "moe_config.json"


class AdapterError(ValueError):
    """An adapter folder that cannot be used here (wrong base, shape, config or format)."""


def is_moe(folder: str | Path | None) -> bool:
    """A mixture of LoRA experts (routed per token, never merged) rather than a plain LoRA."""
    return folder is not None and (Path(folder) / MOE_CONFIG).is_file()


def tensor_mismatch(expected: Mapping[str, Any], saved: Mapping[str, Any]) -> str | None:
    """Why an adapter's tensors (name -> tensor or shape) do not fit a model's LoRA layers, or
    None: the one check that continual training's init and the bank's import share. Names catch
    another LoRA config; shapes catch a base of another size whose folder is not here to hash."""
    missing, extra = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    if missing or extra:
        return f"tensors do not match the model (missing {missing[:3]}, unexpected {extra[:3]})"
    for key in sorted(expected):
        want, got = (tuple(getattr(d[key], "shape", d[key])) for d in (expected, saved))
        if got != want:
            return (
                f"{key} has shape {list(got)}, the model needs {list(want)} "
                "(an adapter for a different base)"
            )
    return None


def read_adapter_meta(folder: str | Path) -> dict:
    """`cift_adapter.json` of an adapter folder ({"base_hash", "metadata"})."""
    path = Path(folder) / CIFT_META
    if not path.is_file():
        raise AdapterError(f"{folder}: no {CIFT_META} (not an adapter written by cift)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise AdapterError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise AdapterError(f"{path}: not a JSON object")
    return meta


def write_adapter_meta(folder: str | Path, base_hash: str, metadata: dict | None = None) -> Path:
    """Write `cift_adapter.json` into a folder being built (the caller renames it into place)."""
    path = Path(folder) / CIFT_META
    meta = {"base_hash": base_hash, "metadata": metadata or {}}
    path.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def check_base_hash(folder: str | Path, expected_base_hash: str | None) -> dict:
    """The adapter's metadata, after checking it was trained on the base with this hash (None
    skips the comparison but still requires the metadata file)."""
    meta = read_adapter_meta(folder)
    if expected_base_hash is not None and meta.get("base_hash") != expected_base_hash:
        raise AdapterError(
            f"{folder}: adapter was trained on base model {str(meta.get('base_hash'))[:12]}…, "
            f"but the loaded base is {expected_base_hash[:12]}… (a different model or weights)"
        )
    return meta


def weights_file(folder: str | Path) -> Path:
    """The folder's safetensors weights (refused when missing: no pickle format is ever read)."""
    path = Path(folder) / WEIGHTS
    if not path.is_file():
        raise AdapterError(f"{folder}: no {WEIGHTS} (only safetensors adapters are loaded)")
    return path


def read_lora_config(folder: str | Path) -> dict:
    """`adapter_config.json` (PEFT's LoRA config) of an adapter folder."""
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise AdapterError(f"{folder}: no {CONFIG}")
    return json.loads(path.read_text(encoding="utf-8"))


def lora_scale(config: dict[str, Any]) -> float:
    """LoRA's scaling of B·A: alpha / r, or alpha / √r with rsLoRA (as PEFT computes it)."""
    r, alpha = int(config["r"]), float(config.get("lora_alpha", config["r"]))
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def adapter_digest(folder: str | Path) -> str:
    """sha256 of the adapter's safetensors weights (the version's identity)."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no *.safetensors adapter weights")
    h = hashlib.sha256()
    for f in files:
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()
