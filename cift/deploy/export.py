"""`cift export merged VERSION DIR`: a version's adapter merged into the base, as a plain
transformers folder (for runtimes without LoRA support). Versions themselves stay adapters."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any


def export_merged(
    cfg: Any,
    model: str,
    out_dir: str | Path,
    dtype: str = "float32",
    registry: str | Path | None = None,
) -> dict:
    """Write the merged model + tokenizer to `out_dir` (built beside it, then renamed into place,
    so an interrupted export leaves no half-written folder). Refuses a non-empty `out_dir`."""
    from hydra.utils import instantiate

    from cift.deploy.resolve import resolve_model
    from cift.models.version import load_version

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: exists and is not empty")
    name, adapter = resolve_model(model, cfg, registry)
    loaded = load_version(instantiate(cfg.model), adapter, dtype=dtype)
    merged, tokenizer = loaded.model, loaded.tokenizer
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"version": name, "adapter": adapter, "out": str(out), "dtype": dtype}
