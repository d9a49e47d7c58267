"""One model version = one LoRA adapter folder on the frozen base, identified by the base's hash.

The folder is what `PeftModel.from_pretrained` and vLLM read (adapter_config.json +
adapter_model.safetensors) plus `cift_adapter.json` {base_hash, metadata}. Folders are written
atomically (a temp folder renamed into place), and only safetensors weights are ever loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
CIFT_META = "cift_adapter.json"
_MATCHED = ("r", "lora_alpha", "target_modules")


class AdapterError(ValueError):
    """An adapter folder that cannot be used here (wrong base, shape, config or format)."""


def read_adapter_meta(adapter_dir: str | Path) -> dict:
    """`cift_adapter.json` of an adapter folder ({"base_hash", "metadata"})."""
    path = Path(adapter_dir) / CIFT_META
    if not path.is_file():
        raise AdapterError(f"{adapter_dir}: no {CIFT_META} (not an adapter written by cift)")
    return json.loads(path.read_text(encoding="utf-8"))


def check_base_hash(adapter_dir: str | Path, expected_base_hash: str | None) -> dict:
    """The adapter's metadata, after checking it was trained on the base with this hash."""
    meta = read_adapter_meta(adapter_dir)
    if expected_base_hash is not None and meta.get("base_hash") != expected_base_hash:
        raise AdapterError(
            f"{adapter_dir}: adapter was trained on base model {str(meta.get('base_hash'))[:12]}…, "
            f"but the loaded base is {expected_base_hash[:12]}… (a different model or weights)"
        )
    return meta


def _weights_file(adapter_dir: Path) -> Path:
    path = adapter_dir / WEIGHTS
    if not path.is_file():
        raise AdapterError(f"{adapter_dir}: no {WEIGHTS} (only safetensors adapters are loaded)")
    return path


def _norm(value: Any) -> Any:
    return sorted(value) if isinstance(value, list | set | tuple) else value


def init_from_adapter(
    peft_model: Any, adapter_dir: str | Path, *, expected_base_hash: str | None = None
) -> int:
    """Copy a production adapter's weights into `peft_model`'s fresh adapter (same r, alpha and
    target modules; every tensor present with the same shape). Returns the tensors copied."""
    from peft import set_peft_model_state_dict
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    check_base_hash(adapter_dir, expected_base_hash)
    saved_cfg = json.loads((adapter_dir / CONFIG).read_text(encoding="utf-8"))
    ours = peft_model.peft_config["default"].to_dict()
    for key in _MATCHED:
        if _norm(saved_cfg.get(key)) != _norm(ours.get(key)):
            raise AdapterError(
                f"{adapter_dir}: {key}={saved_cfg.get(key)!r} but train.lora gives "
                f"{ours.get(key)!r}; continual training needs the same LoRA shape "
                "(use train.init=fresh to start over)"
            )
    saved = load_file(str(_weights_file(adapter_dir)))
    expected = get_peft_model_state_dict(peft_model)
    missing = sorted(set(expected) - set(saved))
    extra = sorted(set(saved) - set(expected))
    if missing or extra:
        raise AdapterError(
            f"{adapter_dir}: adapter tensors do not match the model "
            f"(missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for key, tensor in expected.items():
        if tuple(saved[key].shape) != tuple(tensor.shape):
            raise AdapterError(
                f"{adapter_dir}: {key} has shape {tuple(saved[key].shape)}, "
                f"the model expects {tuple(tensor.shape)}"
            )
    set_peft_model_state_dict(peft_model, saved)
    return len(saved)


def save_adapter(
    peft_model: Any, out_dir: str | Path, *, base_hash: str, metadata: dict | None = None
) -> Path:
    """Write adapter_config.json + adapter_model.safetensors + cift_adapter.json atomically.

    An existing `out_dir` is replaced only once the new folder is complete."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        peft_model.save_pretrained(str(tmp), safe_serialization=True)
        meta = {"base_hash": base_hash, "metadata": metadata or {}}
        (tmp / CIFT_META).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        _weights_file(tmp)
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_adapter(
    base_model: Any,
    adapter_dir: str | Path,
    expected_base_hash: str | None,
    *,
    is_trainable: bool = False,
) -> Any:
    """`PeftModel.from_pretrained(base_model, adapter_dir)` after checking the base hash and that
    the weights are safetensors."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    check_base_hash(adapter_dir, expected_base_hash)
    _weights_file(adapter_dir)
    return PeftModel.from_pretrained(base_model, str(adapter_dir), is_trainable=is_trainable)
