"""Continual-learning metrics over the accuracy matrix R (Lopez-Paz & Ranzato 2017).

R has N+1 rows and N columns: row 0 = the base model, row k = production after batch k; column i
= batch i's test split (fractions). ACC = mean_i R[N][i]; BWT = mean_{i<N} (R[N][i] − R[i][i]);
FWT = mean_{i≥2} (R[i−1][i] − R[0][i]) (batches 1-indexed as in the paper, lists 0-indexed here).
Intervals come from resampling each test split's cases (`continual_intervals`); the stage
computes both from the generated-answer accuracy (R) and from the ranked accuracy (R_ranked).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def continual_metrics(R: Sequence[Sequence[Any]]) -> dict:
    """{"ACC", "BWT", "FWT"}; a term is None when it has no defined pair (e.g. N = 1)."""
    n = len(R) - 1
    if n < 1 or any(len(row) != n for row in R):
        raise ValueError(f"R must have N+1 rows of N columns, got {[len(r) for r in R]}")

    def ok(*xs: float | None) -> bool:
        return all(x is not None for x in xs)

    last = R[n]
    acc = [last[c] for c in range(n) if ok(last[c])]
    bwt = [last[c] - R[c + 1][c] for c in range(n - 1) if ok(last[c], R[c + 1][c])]
    fwt = [R[c][c] - R[0][c] for c in range(1, n) if ok(R[c][c], R[0][c])]
    return {"ACC": _mean(acc), "BWT": _mean(bwt), "FWT": _mean(fwt)}


def continual_intervals(
    scores: Sequence[Sequence[Mapping[str, float]]],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """Percentile-bootstrap intervals of ACC / BWT / FWT from per-case scores.

    scores[row][col] = {case id: 0/1} of one version (row) on one batch's test split (col).
    Each resample draws every column's cases once and scores all rows on that same draw (the
    rows answer the same cases: the pairing is kept), then recomputes R and the metrics.
    Returns {"ACC_ci", "BWT_ci", "FWT_ci"}, an interval None where its metric is undefined.
    """
    rng = np.random.default_rng(seed)
    n_cols = len(scores[0]) if scores else 0
    R_boot: list[list[np.ndarray | None]] = [[None] * n_cols for _ in scores]
    for c in range(n_cols):
        ids = sorted(set.intersection(*(set(row[c]) for row in scores)))
        if not ids:
            continue
        idx = rng.integers(0, len(ids), size=(n_boot, len(ids)))
        for r, row in enumerate(scores):
            values = np.asarray([row[c][i] for i in ids], dtype=float)
            R_boot[r][c] = values[idx].mean(axis=1)
    boot = continual_metrics(R_boot)
    out = {}
    for key, values in boot.items():
        ci = None if values is None else np.quantile(values, [alpha / 2, 1 - alpha / 2])
        out[f"{key}_ci"] = None if ci is None else [float(ci[0]), float(ci[1])]
    return out
