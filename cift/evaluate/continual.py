"""Continual-learning metrics over the accuracy matrix R (Lopez-Paz & Ranzato 2017).

R has N+1 rows and N columns: row 0 = the base model, row k = production after batch k; column i
= batch i's test split (fractions). ACC = mean_i R[N][i]; BWT = mean_{i<N} (R[N][i] − R[i][i]);
FWT = mean_{i≥2} (R[i−1][i] − R[0][i]) (batches 1-indexed as in the paper, lists 0-indexed here).
"""

from __future__ import annotations

from collections.abc import Sequence


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def continual_metrics(R: Sequence[Sequence[float | None]]) -> dict:
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
