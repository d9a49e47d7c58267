"""Score distributions of a filter run, as data `dvc plots` can draw."""

from __future__ import annotations

import numpy as np

SCORES = ("n_sentences", "diversity", "ifd", "ppl_cond", "ppl_direct")


def histograms(scores: list[dict], bins: int = 20) -> dict[str, list[dict]]:
    """{score: [{"bin": left edge, "count": n}, ...]} for every score that has values."""
    out: dict[str, list[dict]] = {}
    for name in SCORES:
        values = np.array([r[name] for r in scores if r.get(name) is not None], dtype=float)
        values = values[np.isfinite(values)]
        if values.size == 0:
            continue
        counts, edges = np.histogram(values, bins=bins)
        out[name] = [
            {"bin": round(float(e), 4), "count": int(c)}
            for e, c in zip(edges, counts, strict=False)
        ]
    return out
