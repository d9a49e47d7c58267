"""Score distributions of a filter run, as data `dvc plots` can draw."""

from __future__ import annotations

import numpy as np

SCORES = ("n_sentences", "diversity", "ifd", "ppl_cond", "ppl_direct")


def histograms(scores: list[dict], bins: int = 20) -> dict[str, list[dict]]:
    """{score: [{"bin": left edge, "count": n}, ...]} for every score that has values, and
    "verdicts": [{"bin": "kept" | "<step>: <reason>", "count": n}] for any selector (one that
    scores nothing, like random, still draws where its samples went, so every experiment has
    a plot at the same path for `dvc plots diff`)."""
    out: dict[str, list[dict]] = {"verdicts": verdict_counts(scores)} if scores else {}
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


def verdict_counts(scores: list[dict]) -> list[dict]:
    """[{"bin": "kept" | "<step>: <reason>", "count": n}], kept first, then by count."""
    counts: dict[str, int] = {}
    for r in scores:
        key = "kept" if r.get("verdict") == "kept" else f"{r.get('step')}: {r.get('reason')}"
        counts[key] = counts.get(key, 0) + 1
    order = sorted(counts, key=lambda k: (k != "kept", -counts[k], k))
    return [{"bin": k, "count": counts[k]} for k in order]
