"""Selection (SPEC §1, step 3's last part) and the random-subset baseline.

`TopFraction` keeps the highest-scoring samples within `[tau_min, max_value)` — for IFD, the
paper's `τ_min ≤ IFD < 1` then top-k — up to `top_k` or `fraction` × the samples that entered
the filter stage (`ctx.n_in`, not the survivors of earlier steps). Fewer candidates than wanted is
a shortfall, recorded in `ctx.extra["shortfall"]`, never padded with out-of-range samples.
"""

from __future__ import annotations

import math
import random

from cift.filters.base import FilterContext


def wanted_count(fraction: float, top_k: int | None, n_in: int) -> int:
    """`top_k` when given, else `fraction` × `n_in` rounded half up (0.5 → 1)."""
    if top_k is not None:
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {top_k}")
        return int(top_k)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    return math.floor(fraction * n_in + 0.5)


def record_shortfall(ctx: FilterContext, wanted: int, kept: int) -> None:
    ctx.extra["wanted"] = wanted
    ctx.extra["shortfall"] = max(0, wanted - kept)


class TopFraction:
    """Keep the highest `stats[key]` first among `tau_min <= value < max_value`.

    Drops: outside the range -> "<key>_out_of_range" (e.g. "ifd_out_of_range"); no value (None
    or NaN, e.g. a sample the scorer could not score) -> "<key>_missing"; in range but beyond the
    quota -> "not_selected". Ties keep input order.
    """

    def __init__(
        self,
        key: str = "ifd",
        fraction: float = 0.33,
        top_k: int | None = None,
        tau_min: float = 0.0,
        max_value: float = 1.0,
        name: str = "select",
    ) -> None:
        wanted_count(fraction, top_k, 0)  # validate early, at config time
        self.key, self.fraction, self.top_k = key, float(fraction), top_k
        self.tau_min, self.max_value = float(tau_min), float(max_value)
        self.name = name

    def apply(
        self, samples: list[dict], stats: dict[str, dict], ctx: FilterContext
    ) -> dict[str, str]:
        dropped: dict[str, str] = {}
        candidates: list[tuple[float, int, str]] = []
        for i, sample in enumerate(samples):
            sid = sample["id"]
            value = stats[sid].get(self.key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                dropped[sid] = f"{self.key}_missing"
            elif not self.tau_min <= value < self.max_value:
                dropped[sid] = f"{self.key}_out_of_range"
            else:
                candidates.append((-float(value), i, sid))
        wanted = wanted_count(self.fraction, self.top_k, ctx.n_in or len(samples))
        candidates.sort()
        for _, _, sid in candidates[wanted:]:
            dropped[sid] = "not_selected"
        record_shortfall(ctx, wanted, min(wanted, len(candidates)))
        return dropped


class RandomFraction:
    """The random-subset baseline: keep `top_k` or `fraction` × `ctx.n_in` samples drawn with
    `random.Random(ctx.seed)`; drop the rest ("not_selected")."""

    def __init__(
        self, fraction: float = 0.33, top_k: int | None = None, name: str = "random"
    ) -> None:
        wanted_count(fraction, top_k, 0)
        self.fraction, self.top_k, self.name = float(fraction), top_k, name

    def apply(
        self, samples: list[dict], stats: dict[str, dict], ctx: FilterContext
    ) -> dict[str, str]:
        wanted = wanted_count(self.fraction, self.top_k, ctx.n_in or len(samples))
        keep = min(wanted, len(samples))
        chosen = set(random.Random(ctx.seed).sample(range(len(samples)), keep))
        record_shortfall(ctx, wanted, keep)
        return {s["id"]: "not_selected" for i, s in enumerate(samples) if i not in chosen}
