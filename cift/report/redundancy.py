"""Redundant selections: a selected sample that repeats one already trained on in the chain.

Redundant = the sample's instruction + input has MiniLM cosine >= `threshold` (0.95) with a
sample selected for training on an earlier batch of the same chain. A proxy that learnt those
samples scores their repeats low (IFD falls once the answer is known), so it selects fewer.

A repeat is the generator's own ground truth beside it: a selected sample whose record is a
near-duplicate (`near_duplicate_of`, followed to the original) of a record trained on earlier.
A repeat rendered in another style (note, lay text, dialogue) is far in MiniLM space, so the
two counts differ.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from cift.scoring.embeddings import Embed, minilm_embed, prompt_text


def record_origins(records: Iterable[dict]) -> dict[str, str]:
    """record id -> the original it repeats (itself when it is not a near-duplicate)."""
    parent = {r["id"]: r.get("near_duplicate_of") for r in records}

    def root(rid: str) -> str:
        seen = {rid}
        while parent.get(rid) and parent[rid] not in seen:
            rid = parent[rid]
            seen.add(rid)
        return rid

    return {rid: root(rid) for rid in parent}


def origin(sample: dict, origins: dict[str, str]) -> str:
    rid = (sample.get("meta") or {}).get("record_id") or sample.get("id", "")
    return origins.get(rid, rid)


def redundancy_per_batch(
    batches: Sequence[str],
    history: dict[str, list[dict]],
    selections: dict[str, list[dict]],
    embed: Embed = minilm_embed,
    threshold: float = 0.95,
    origins: dict[str, str] | None = None,
) -> list[dict]:
    """For batches 2..N: {"batch", "selected", "redundant_selected", "repeats_selected"}.

    `history[b]` = what the chain trained on at batch b (its selection); `selections[b]` = the
    selection being measured (the chain's own, or another proxy's on the same candidates);
    `origins` from `record_origins`. Everything is embedded in one batched call.
    """
    origins = origins or {}
    texts: dict[str, int] = {}
    for rows in (*history.values(), *selections.values()):
        for s in rows:
            texts.setdefault(prompt_text(s), len(texts))
    table = embed(list(texts)) if texts else np.zeros((0, 1), dtype=np.float32)

    def vectors(rows: list[dict]) -> np.ndarray:
        return table[[texts[prompt_text(s)] for s in rows]] if rows else table[:0]

    out = []
    for k, batch in enumerate(batches[1:], start=1):
        seen = [s for b in batches[:k] for s in history.get(b, [])]
        chosen = selections.get(batch, [])
        redundant = 0
        if seen and chosen:
            sims = vectors(chosen) @ vectors(seen).T
            redundant = int((sims.max(axis=1) >= threshold - 1e-6).sum())
        trained = {origin(s, origins) for s in seen}
        repeats = sum(origin(s, origins) in trained for s in chosen)
        out.append(
            {
                "batch": batch,
                "selected": len(chosen),
                "redundant_selected": redundant,
                "repeats_selected": repeats,
            }
        )
    return out


def repeat_candidates(
    batches: Sequence[str],
    history: dict[str, list[dict]],
    candidates: dict[str, list[dict]],
    origins: dict[str, str],
) -> dict:
    """How many of each batch's training candidates (batches 2..N) repeat a record the chain
    trained on earlier: the repeats a proxy could avoid, whichever it selects."""
    per_batch = []
    for k, batch in enumerate(batches[1:], start=1):
        trained = {origin(s, origins) for b in batches[:k] for s in history.get(b, [])}
        rows = candidates.get(batch, [])
        hits = sum(origin(s, origins) in trained for s in rows)
        per_batch.append({"batch": batch, "candidates": len(rows), "repeat_candidates": hits})
    return {"total": sum(r["repeat_candidates"] for r in per_batch), "per_batch": per_batch}
