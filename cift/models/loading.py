"""Load a causal LM + tokenizer from a `ModelSpec` (a Hydra `model/` config).

Every source resolves to a local folder with safetensors weights, so the base-model identity
(sha256 of the weight file) is defined the same way for all of them. The embedded and tiny
models are local folders loaded with `local_files_only` (never the network); a named hub model
downloads into the usual HF cache, unless the user sets HF_HUB_OFFLINE=1 (then it must be
there already).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cift.models.paths import cache_dir, embedded_gguf

os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

# what a snapshot of a hub model needs: config, tokenizer, safetensors weights, remote code
HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "*.py"]

SOURCES = ("embedded", "hf", "tiny_random")


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    base_hash: str
    path: Path
    dtype: Any
    adapter: str | None = None  # the version's adapter folder (`cift.models.version`), if any


@dataclass
class ModelSpec:
    """What to load; instantiating it is cheap (no weights), `load()` does the work."""

    name: str
    source: str = "embedded"
    path: str | None = None  # HF id or local folder (source=hf)
    dtype: str = "auto"  # auto | bfloat16 | float32 | float16
    trust_remote_code: bool = False
    revision: str | None = None
    tiny: dict = field(default_factory=dict)  # config overrides for source=tiny_random
    seed: int = 0

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"model.source: {self.source!r} is not one of {SOURCES}")
        if self.source == "hf" and not self.path:
            raise ValueError("model.path: required when model.source=hf (an HF id or a folder)")

    def local_dir(self) -> Path:
        """The folder holding config, tokenizer and safetensors weights (converted on first use)."""
        if self.source == "embedded":
            return embedded_model_dir()
        if self.source == "tiny_random":
            return tiny_random_dir(dict(self.tiny), self.seed)
        if Path(self.path).is_dir():
            return Path(self.path)
        from huggingface_hub import snapshot_download  # an HF id: the usual HF cache

        return Path(snapshot_download(self.path, revision=self.revision, allow_patterns=HUB_FILES))

    def load(self, device: str = "cpu", dtype: str | None = None) -> LoadedModel:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch_dtype = resolve_dtype(dtype or self.dtype, device)
        where = self.local_dir()
        kw = {"trust_remote_code": self.trust_remote_code, "revision": self.revision}
        kw["local_files_only"] = True  # local_dir() is a folder on disk for every source
        tokenizer = AutoTokenizer.from_pretrained(str(where), **kw)
        model = AutoModelForCausalLM.from_pretrained(str(where), dtype=torch_dtype, **kw)
        model.to(device).eval()
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        local = where if where.is_dir() else Path(model.config.name_or_path)
        return LoadedModel(model, tokenizer, base_model_hash(local), local, torch_dtype)


def resolve_device(device: str = "auto") -> str:
    """`auto` = cuda when a GPU is visible, cpu otherwise."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(name: str, device: str = "cpu"):
    """`auto` = bf16 on CUDA with bf16 support or on a CPU with AMX/AVX512-BF16, fp32 otherwise."""
    import torch

    if name != "auto":
        return getattr(torch, name)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


def resolve_precision(precision: str, accelerator: str = "cpu") -> str:
    """A Lightning precision; `auto` = the mixed precision of `resolve_dtype("auto")` on that
    accelerator (bf16-mixed where bf16 matmuls are fast, 16-mixed on a CUDA GPU without bf16),
    else 32-true: on a CPU without AVX512-BF16/AMX a bf16 matmul runs at a quarter of fp32's
    rate, so mixed precision would only slow training."""
    if precision != "auto":
        return str(precision)
    import torch

    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    dtype = resolve_dtype("auto", "cuda" if gpu else "cpu")
    return {torch.bfloat16: "bf16-mixed", torch.float16: "16-mixed"}.get(dtype, "32-true")


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("amx_bf16", "avx512_bf16"))


def _save_atomically(dest: Path, save) -> Path:
    """Run `save(tmpdir)` then rename into place: a killed conversion never leaves half a cache."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    try:
        save(tmp)
        if dest.exists():  # another process won the race
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def embedded_model_dir() -> Path:
    """SmolLM2-135M-Instruct dequantised from the shipped GGUF into a safetensors cache (once)."""
    dest = cache_dir() / "models" / "smollm2-135m-instruct"
    if (dest / "model.safetensors").is_file():
        return dest

    def convert(tmp: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = embedded_gguf()
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # The weights are dense after dequantisation; forget the GGUF origin, or every later
        # load is treated as a GGUF checkpoint (and save_pretrained refuses to run).
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return _save_atomically(dest, convert)


TINY_DEFAULTS = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
}


def tiny_random_dir(overrides: dict, seed: int = 0) -> Path:
    """A small random model with the embedded config's architecture and tokenizer (for tests)."""
    params = {**TINY_DEFAULTS, **overrides}
    key = hashlib.sha256(json.dumps([params, seed], sort_keys=True).encode()).hexdigest()[:12]
    dest = cache_dir() / "models" / f"tiny-random-{key}"
    if (dest / "model.safetensors").is_file():
        return dest

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        src = embedded_model_dir()
        config = AutoConfig.from_pretrained(str(src))
        for k, v in params.items():
            setattr(config, k, v)
        config.head_dim = params["hidden_size"] // params["num_attention_heads"]
        torch.manual_seed(seed)
        AutoModelForCausalLM.from_config(config).save_pretrained(tmp)
        AutoTokenizer.from_pretrained(str(src)).save_pretrained(tmp)

    return _save_atomically(dest, build)


def base_model_hash(folder: Path) -> str:
    """sha256 of the weight file(s): the identity recorded wherever an adapter is saved."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no .safetensors weights (only safetensors are loaded)")
    stats = [(f, f.stat()) for f in files]
    return _hash_files(tuple((str(f.resolve()), s.st_size, s.st_mtime_ns) for f, s in stats))


@lru_cache(maxsize=16)
def _hash_files(stamps: tuple[tuple[str, int, int], ...]) -> str:
    """Hashed once per (path, size, mtime) and remembered under the cache folder: every stage
    loads the base, and reading half a gigabyte each time cost a third of a second per load."""
    from cift.io.jsonl import write_text_atomic

    memo = cache_dir() / "hashes" / hashlib.sha256(json.dumps(stamps).encode()).hexdigest()
    if memo.is_file():
        return memo.read_text(encoding="utf-8").strip()
    h = hashlib.sha256()
    for path, _, _ in stamps:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    write_text_atomic(memo, h.hexdigest())
    return h.hexdigest()
