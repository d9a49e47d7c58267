"""Train/val/test splits by record, and the contamination filter between them.

Splitting records (not samples) keeps every rendering and answer of one patient on one side, and
the contamination filter then drops val/test records whose text is (nearly) a training record's:
near-duplicates are generated on purpose, and they would inflate held-out accuracy.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

_WORD = re.compile(r"\w+")
_EMBED_CHUNK = 1024  # eval rows per similarity block: bounded memory for large sets


def _record_key(item: dict) -> str:
    """A sample's record id (meta.record_id) or a record's own id."""
    meta = item.get("meta") or {}
    return str(meta.get("record_id") or item["id"])


def split_by_record(
    records: Sequence[dict],
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int | str = 0,
    min_test: int = 0,
    min_val: int = 0,
    *,
    key: Callable[[dict], str] = _record_key,
    train_only: Callable[[dict], bool] | None = None,
) -> dict[str, list[dict]]:
    """Deterministic {"train", "val", "test"} split; items sharing a record id stay together.

    Accepts records or samples (grouped by `meta.record_id`). Val/test get round(fraction * n
    records), at least `min_val`/`min_test`; the rest is train. Items keep their input order.
    `seed` may be a string ("7-b1"): `random.Random` seeds strings stably (no salted hash).
    Items for which `train_only` holds never go to val/test (a near-copy of an earlier training
    record would be a leak there).
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1: {fractions}")
    ids = sorted({key(r) for r in records})
    n = len(ids)
    n_val = max(min_val, round(fractions[1] * n))
    n_test = max(min_test, round(fractions[2] * n))
    if n_val + n_test > n:
        raise ValueError(f"{n} records cannot give {n_val} val + {n_test} test records")
    random.Random(seed).shuffle(ids)
    if train_only is not None:
        pinned = {key(r) for r in records if train_only(r)}
        ids = [i for i in ids if i not in pinned]
        if n_val + n_test > len(ids):
            raise ValueError(
                f"{len(ids)} records may be evaluated: too few for {n_val} val + {n_test} test"
            )
    side = {rid: "test" for rid in ids[:n_test]}
    side.update({rid: "val" for rid in ids[n_test : n_test + n_val]})
    out: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for r in records:
        out[side.get(key(r), "train")].append(r)
    return out


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    if not words:
        return set()
    n = min(n, len(words))  # a text shorter than n words is one n-gram
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _ngram_fractions(
    eval_texts: list[str], train_texts: list[str], n: int
) -> list[dict[int, float]]:
    """Per eval text: {training text j: fraction of the eval text's n-grams found in text j}
    (only texts sharing an n-gram). The rule's one direction, whichever side is being dropped."""
    index: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for j, text in enumerate(train_texts):
        for gram in _ngrams(text, n):
            index[gram].append(j)
    fractions: list[dict[int, float]] = []
    for text in eval_texts:
        grams = _ngrams(text, n)
        hits = Counter(j for gram in grams for j in index.get(gram, ()))
        fractions.append({j: count / len(grams) for j, count in hits.items()})
    return fractions


def _max_ngram_overlap(
    eval_texts: list[str], train_texts: list[str], n: int
) -> list[tuple[float, int]]:
    """Per eval text: (largest fraction of its n-grams found in one training text, that text)."""
    best: list[tuple[float, int]] = []
    for hits in _ngram_fractions(eval_texts, train_texts, n):
        if not hits:
            best.append((0.0, -1))
            continue
        j, frac = max(hits.items(), key=lambda kv: (kv[1], -kv[0]))
        best.append((frac, j))
    return best


def _max_cosine(
    eval_texts: list[str], train_texts: list[str], embed_fn: Callable[[list[str]], np.ndarray]
) -> list[tuple[float, int]]:
    train = np.asarray(embed_fn(train_texts), dtype=np.float32)
    evals = np.asarray(embed_fn(eval_texts), dtype=np.float32)
    best: list[tuple[float, int]] = []
    for start in range(0, len(evals), _EMBED_CHUNK):
        sims = evals[start : start + _EMBED_CHUNK] @ train.T
        idx = sims.argmax(axis=1)
        best += [(float(sims[i, j]), int(j)) for i, j in enumerate(idx)]
    return best


def contamination_filter(
    train_records: Sequence[dict],
    eval_records: Sequence[dict],
    *,
    texts_fn: Callable[[dict], str],
    embed_fn: Callable[[list[str]], np.ndarray] | None = None,
    cosine: float = 0.95,
    ngram: int = 8,
    ngram_overlap: float = 0.5,
) -> tuple[list[dict], list[dict], float]:
    """Drop eval (val/test) records whose text is too close to any training record's text.

    A record is dropped when the fraction of its word `ngram`-grams found in one training text is
    >= `ngram_overlap`, or (with `embed_fn`, which returns L2-normalised rows) when its cosine
    similarity to a training text is >= `cosine`. Returns (kept, dropped, rate) where each dropped
    entry is {"record", "reason": "ngram_overlap"|"embedding_cosine", "score", "train_id"} and
    rate = dropped / eval records (0.0 when there are none).
    """
    eval_records = list(eval_records)
    if not eval_records:
        return [], [], 0.0
    if not train_records:
        return eval_records, [], 0.0
    train_texts = [texts_fn(r) for r in train_records]
    eval_texts = [texts_fn(r) for r in eval_records]
    overlaps = _max_ngram_overlap(eval_texts, train_texts, ngram)
    cosines = _max_cosine(eval_texts, train_texts, embed_fn) if embed_fn else None
    kept: list[dict] = []
    dropped: list[dict] = []
    for i, record in enumerate(eval_records):
        reason, score, j = None, 0.0, -1
        if overlaps[i][0] >= ngram_overlap:
            reason, (score, j) = "ngram_overlap", overlaps[i]
        elif cosines is not None and cosines[i][0] >= cosine:
            reason, (score, j) = "embedding_cosine", cosines[i]
        if reason is None:
            kept.append(record)
        else:
            train_id = train_records[j].get("id")
            dropped.append(
                {"record": record, "reason": reason, "score": score, "train_id": train_id}
            )
    return kept, dropped, len(dropped) / len(eval_records)


def training_contamination(
    train_records: Sequence[dict],
    eval_texts: Sequence[str],
    eval_ids: Sequence[str],
    *,
    texts_fn: Callable[[dict], str],
    embed_fn: Callable[[list[str]], np.ndarray] | None = None,
    cosine: float = 0.95,
    ngram: int = 8,
    ngram_overlap: float = 0.5,
) -> tuple[list[dict], list[dict]]:
    """The contamination rule run the other way: drop training candidates close to held-out texts.

    A later batch's training records must not near-duplicate an evaluation record that is already
    fixed (an earlier batch's val/test, the global test set): that would inflate R[k][i] for
    k > i and hide forgetting. The rule is `contamination_filter`'s, with the same direction (the
    share of the *evaluation* text's `ngram`-grams found in the candidate, or MiniLM cosine), so a
    kept candidate passes `contamination_filter(kept, evals)` too. Returns (kept, dropped); each
    dropped entry is {"record", "reason", "score", "eval_id"}.
    """
    train_records = list(train_records)
    if len(eval_texts) != len(eval_ids):
        raise ValueError(f"{len(eval_texts)} held-out texts but {len(eval_ids)} ids")
    if not train_records or not eval_texts:
        return train_records, []
    train_texts = [texts_fn(r) for r in train_records]
    best_ngram: list[tuple[float, int]] = [(0.0, -1)] * len(train_records)
    for i, hits in enumerate(_ngram_fractions(list(eval_texts), train_texts, ngram)):
        for j, frac in hits.items():
            if frac > best_ngram[j][0]:
                best_ngram[j] = (frac, i)
    # cosine is symmetric: the nearest held-out text of each candidate
    cosines = _max_cosine(train_texts, list(eval_texts), embed_fn) if embed_fn else None
    kept: list[dict] = []
    dropped: list[dict] = []
    for j, record in enumerate(train_records):
        reason, score, i = None, 0.0, -1
        if best_ngram[j][0] >= ngram_overlap:
            reason, (score, i) = "ngram_overlap", best_ngram[j]
        elif cosines is not None and cosines[j][0] >= cosine:
            reason, (score, i) = "embedding_cosine", cosines[j]
        if reason is None:
            kept.append(record)
        else:
            dropped.append(
                {"record": record, "reason": reason, "score": score, "eval_id": eval_ids[i]}
            )
    return kept, dropped


def _minilm(device: str) -> Any:
    from cift.scoring.embeddings import sentence_model  # one cached loader for all embedders

    return sentence_model("minilm", device)


def minilm_embedder(device: str = "cpu", batch_size: int = 64) -> Callable[[list[str]], np.ndarray]:
    """An embed_fn backed by the embedded all-MiniLM-L6-v2 (loaded once per device, offline).

    Texts are encoded in batches of `batch_size`; rows are L2-normalised float32 (384 dims).
    """

    def embed(texts: list[str]) -> np.ndarray:
        model = _minilm(device)
        if not texts:
            return np.zeros((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
        vectors = model.encode(
            list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)

    return embed
