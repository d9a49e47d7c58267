"""K-shot guided similarity–diversity selection (SPEC §2): keep the candidates most like a few
labelled examples of the task, then thin out near-duplicates among them.

The K-shot set is `k` samples drawn with the seed from this batch's candidates (training split
only, so validation and test stay untouched) and removed from the pool (reason
`kshot_example`), or the first `k` lines of a user's file after a seeded shuffle. Candidates are
ranked by their highest MiniLM cosine (instruction + input) to the K-shot set; the top `fraction`
× the samples that entered the filter are kept, then, greedily in rank order, a kept sample with
cosine ≥ `dedup_threshold` to a higher-ranked kept one is dropped (`near_duplicate`).
"""

from __future__ import annotations

import random
from pathlib import Path

from cift.filters.base import FilterContext
from cift.filters.select import record_shortfall, wanted_count
from cift.scoring.embeddings import Embed, minilm_embed, prompt_text


class SimDivFilter:
    def __init__(
        self,
        k: int = 5,
        fraction: float = 0.33,
        top_k: int | None = None,
        dedup_threshold: float = 0.95,
        kshot_file: str | None = None,
        embed: Embed | None = None,
        name: str = "simdiv",
    ) -> None:
        if k < 1:
            raise ValueError(f"filter.simdiv.k must be >= 1, got {k}")
        wanted_count(fraction, top_k, 0)
        self.k, self.fraction, self.top_k = int(k), float(fraction), top_k
        self.threshold, self.kshot_file = float(dedup_threshold), kshot_file
        self.embed, self.name = embed or minilm_embed, name

    def kshot(self, samples: list[dict], seed: int) -> tuple[list[dict], set[str]]:
        """(the K-shot examples, the candidate ids they take out of the pool)."""
        rng = random.Random(f"{seed}-kshot")
        if self.kshot_file:
            from cift.io.jsonl import read_samples

            lines = read_samples(Path(self.kshot_file), strict=True).accepted
            rng.shuffle(lines)
            return lines[: self.k], set()
        order = sorted(range(len(samples)), key=lambda i: samples[i]["id"])
        picked = [samples[i] for i in sorted(rng.sample(order, min(self.k, len(samples))))]
        return picked, {s["id"] for s in picked}

    def apply(
        self, samples: list[dict], stats: dict[str, dict], ctx: FilterContext
    ) -> dict[str, str]:
        examples, taken = self.kshot(samples, ctx.seed)
        dropped = {sid: "kshot_example" for sid in taken}
        pool = [s for s in samples if s["id"] not in taken]
        wanted = wanted_count(self.fraction, self.top_k, ctx.n_in or len(samples))
        if not pool or not examples:
            record_shortfall(ctx, wanted, 0)
            return dropped | {s["id"]: "not_selected" for s in pool}
        emb = self.embed([prompt_text(s) for s in (*examples, *pool)])
        shots, cands = emb[: len(examples)], emb[len(examples) :]
        similarity = (cands @ shots.T).max(axis=1)
        for s, value in zip(pool, similarity.tolist(), strict=True):
            stats[s["id"]]["kshot_similarity"] = value
        ranked = sorted(range(len(pool)), key=lambda i: (-similarity[i], i))
        kept: list[int] = []
        for i in ranked[wanted:]:
            dropped[pool[i]["id"]] = "not_selected"
        for i in ranked[:wanted]:  # the top fraction, thinned (never back-filled)
            if kept and float((cands[kept] @ cands[i]).max()) >= self.threshold - 1e-6:
                dropped[pool[i]["id"]] = "near_duplicate"
            else:
                kept.append(i)
        record_shortfall(ctx, wanted, len(kept))
        return dropped
