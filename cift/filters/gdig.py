"""G-DIG influence-based selection (SPEC §2): keep candidates whose gradient helps a small
high-quality seed set, spread across gradient clusters.

The seed set: `n_seed` candidates drawn with the seed and held aside (reason `gdig_seed`), their
answers replaced by the KB-built expert answer for the same record where the stage provides one
(`ctx.extra["reference"]`). On the proxy (with its adapter, or a fresh LoRA whose B matrices
carry the gradient), each sample's LoRA gradient is projected to `dim` numbers
(cift.scoring.gradients). With H the damped diagonal of the gradients' second moment (or the
identity), score(c) = Σ_seed ĝ_cᵀ (H + λI)⁻¹ ĝ_seed, gradients normalised in that metric so a
long or badly fitted answer does not win by gradient size alone. A candidate that helps the seed
set scores > 0. `keep=positive` keeps those (at most the quota), `keep=top` the top quota;
either way the quota is filled round-robin over k-means clusters of the projected gradients,
best score first in each.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from cift.filters.base import FilterContext
from cift.filters.select import record_shortfall, wanted_count


class GDIGFilter:
    def __init__(
        self,
        n_seed: int = 8,
        dim: int = 256,
        hessian: str = "diagonal",
        damping: float = 0.1,
        keep: str = "positive",
        fraction: float = 0.33,
        top_k: int | None = None,
        clusters: int = 4,
        max_length: int = 512,
        batch_size: int = 8,
        lora: dict | None = None,
        name: str = "gdig",
    ) -> None:
        if hessian not in ("diagonal", "identity"):
            raise ValueError(f"filter.gdig.hessian: diagonal or identity, got {hessian!r}")
        if keep not in ("positive", "top"):
            raise ValueError(f"filter.gdig.keep: positive or top, got {keep!r}")
        if n_seed < 1:
            raise ValueError(f"filter.gdig.n_seed must be >= 1, got {n_seed}")
        wanted_count(fraction, top_k, 0)
        self.n_seed, self.dim, self.hessian, self.damping = n_seed, dim, hessian, damping
        self.keep, self.fraction, self.top_k, self.clusters = keep, fraction, top_k, clusters
        self.max_length, self.batch_size, self.name = max_length, batch_size, name
        self.lora = lora or {
            "r": 8,
            "alpha": 16,
            "dropout": 0.0,
            "target_modules": ["q_proj", "v_proj"],
        }

    def seed_set(self, samples: list[dict], ctx: FilterContext) -> tuple[list[dict], set[str]]:
        rng = random.Random(f"{ctx.seed}-gdig-seed")
        order = sorted(range(len(samples)), key=lambda i: samples[i]["id"])
        picked = [samples[i] for i in sorted(rng.sample(order, min(self.n_seed, len(samples))))]
        reference = ctx.extra.get("reference")
        seeds = [(reference(s) if reference else None) or s for s in picked]
        return seeds, {s["id"] for s in picked}

    def load_proxy(self, ctx: FilterContext) -> tuple[Any, Any]:
        from cift.models.version import apply_adapter
        from cift.train.module import wrap_lora

        loaded = ctx.proxy.load(dtype="float32")
        if ctx.proxy_adapter:  # the deployed proxy's LoRA, trainable (gradients are the features)
            model = apply_adapter(
                loaded.model, ctx.proxy_adapter, loaded.base_hash, merge=False, trainable=True
            )
        else:
            model = wrap_lora(loaded.model, self.lora)
        return model, loaded.tokenizer

    def scores(self, cand: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        everything = np.concatenate([cand, seeds])
        if self.hessian == "diagonal":
            h = (everything**2).mean(axis=0)
            inverse = 1.0 / (h + self.damping * float(h.mean()) + 1e-12)
        else:
            inverse = np.full(cand.shape[1], 1.0 / (1.0 + self.damping))

        def unit(g: np.ndarray) -> np.ndarray:
            norms = np.sqrt((g * g * inverse).sum(axis=1, keepdims=True))
            return g / np.maximum(norms, 1e-12)

        return (unit(cand) * inverse) @ unit(seeds).sum(axis=0)

    def apply(
        self, samples: list[dict], stats: dict[str, dict], ctx: FilterContext
    ) -> dict[str, str]:
        from cift.scoring.gradients import gradient_sketches
        from cift.train.data import tokenize_sample

        seeds, taken = self.seed_set(samples, ctx)
        dropped = {sid: "gdig_seed" for sid in taken}
        pool = [s for s in samples if s["id"] not in taken]
        wanted = wanted_count(self.fraction, self.top_k, ctx.n_in or len(samples))
        if not pool:
            record_shortfall(ctx, wanted, 0)
            return dropped
        model, tokenizer = self.load_proxy(ctx)
        examples = [
            tokenize_sample(tokenizer, s, ctx.system_prompt, self.max_length)
            for s in (*pool, *seeds)
        ]
        grads = gradient_sketches(
            model, examples, tokenizer.pad_token_id, self.dim, ctx.seed, self.batch_size
        )
        cand = grads[: len(pool)]
        score = self.scores(cand, grads[len(pool) :])
        for s, value in zip(pool, score.tolist(), strict=True):
            stats[s["id"]]["gdig"] = value
        eligible = [i for i in range(len(pool)) if self.keep == "top" or score[i] > 0]
        for i in set(range(len(pool))) - set(eligible):
            dropped[pool[i]["id"]] = "gdig_not_helpful"
        chosen = self.spread(cand, score, eligible, wanted, ctx.seed)
        for i in set(eligible) - set(chosen):
            dropped[pool[i]["id"]] = "not_selected"
        record_shortfall(ctx, wanted, len(chosen))
        return dropped

    def spread(
        self, grads: np.ndarray, score: np.ndarray, eligible: list[int], wanted: int, seed: int
    ) -> list[int]:
        """Round-robin over k-means clusters of the projected gradients, best score first."""
        if len(eligible) <= wanted:
            return list(eligible)
        k = max(1, min(self.clusters, len(eligible)))
        from sklearn.cluster import KMeans

        labels = KMeans(n_clusters=k, random_state=seed, n_init=4).fit_predict(grads[eligible])
        queues = [
            sorted(
                (i for i, c in zip(eligible, labels, strict=True) if c == cluster),
                key=lambda i: -score[i],
            )
            for cluster in range(k)
        ]
        chosen: list[int] = []
        while len(chosen) < wanted:
            for q in queues:
                if q and len(chosen) < wanted:
                    chosen.append(q.pop(0))
        return chosen
