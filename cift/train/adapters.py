"""One model version = one LoRA adapter folder on the frozen base, identified by the base's hash.

The folder format (file names, `cift_adapter.json`, the base-hash check) is
`cift.models.adapter_format`; this module writes folders from a trained PEFT model (atomically: a
temp folder renamed into place) and seeds a new training run from a deployed adapter.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cift.models.adapter_format import (
    AdapterError,
    check_base_hash,
    read_adapter_meta,
    read_lora_config,
    tensor_mismatch,
    weights_file,
    write_adapter_meta,
)

__all__ = [
    "AdapterError",
    "check_base_hash",
    "init_from_adapter",
    "read_adapter_meta",
    "save_adapter",
]
_MATCHED = ("r", "lora_alpha", "target_modules")


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
    saved_cfg = read_lora_config(adapter_dir)
    ours = peft_model.peft_config["default"].to_dict()
    for key in _MATCHED:
        if _norm(saved_cfg.get(key)) != _norm(ours.get(key)):
            raise AdapterError(
                f"{adapter_dir}: {key}={saved_cfg.get(key)!r} but train.lora gives "
                f"{ours.get(key)!r}; continual training needs the same LoRA shape "
                "(use train.init=fresh to start over)"
            )
    saved = load_file(str(weights_file(adapter_dir)))
    reason = tensor_mismatch(get_peft_model_state_dict(peft_model), saved)
    if reason:
        raise AdapterError(f"{adapter_dir}: {reason}")
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
        write_adapter_meta(tmp, base_hash, metadata)
        weights_file(tmp)
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
