"""The paper's Table 1 claims, each with an estimate, an interval and a verdict (torch-free).

A claim about two arms is a paired comparison on Table 1's test set: each arm's per-case scores
(runs/<exp>/table1/<arm>/cases.jsonl, 0/1 under the generated and the ranked metric) are paired
by case id and the difference's interval comes from a paired bootstrap (`paired_diff_ci`). A
claim "difference > threshold" is
- "supported" when the interval's lower bound is above the threshold,
- "not supported" when its upper bound is below it (for "beats", at or below: no gain),
- "inconclusive" otherwise, or when an arm is missing.
Non-inferiority ("filtered matches full") uses threshold −`report.margin`; "beats" uses 0.
The cost claim is a fact, not an estimate: filtered's train_tokens over full's, supported when
at most `report.max_cost_ratio`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cift.evaluate.metrics import paired_diff_ci

VERDICTS = ("supported", "not supported", "inconclusive")
METRICS = {"generated": "accuracy", "ranked": "ranked_accuracy"}  # case score -> arm metric
_EPS = 1e-12  # float slack: a bound exactly at the threshold is not "above" it by rounding


def verdict(lo: float, hi: float, threshold: float, *, strict: bool = False) -> str:
    """The verdict on "difference > threshold" from the interval [lo, hi] (see the module)."""
    if lo > threshold + _EPS:
        return "supported"
    if hi < threshold - _EPS or (strict and hi <= threshold + _EPS):
        return "not supported"
    return "inconclusive"


def paired(
    a: Mapping[str, float | None],
    b: Mapping[str, float | None],
    *,
    n_boot: int,
    seed: int,
) -> dict:
    """mean(a − b) over the cases both arms scored, with its paired bootstrap interval."""
    ids = sorted(i for i in set(a) & set(b) if a[i] is not None and b[i] is not None)
    return paired_diff_ci([a[i] for i in ids], [b[i] for i in ids], n_boot=n_boot, seed=seed)


def comparison(
    claim: str,
    cases: Mapping[str, Mapping[str, Mapping[str, float | None]] | None],
    arm: str,
    other: str,
    metric: str,
    *,
    threshold: float,
    strict: bool = False,
    n_boot: int,
    seed: int,
) -> dict:
    """One paired claim: `arm` − `other` on `metric` ("generated" or "ranked") > threshold.

    `cases[arm][metric]` is {case id: score} (None: the arm did not run)."""
    out: dict[str, Any] = {
        "claim": claim,
        "metric": METRICS[metric],
        "arms": [arm, other],
        "threshold": threshold,
        "estimate": None,
        "ci": None,
        "n": 0,
        "verdict": "inconclusive",
    }
    if not cases.get(arm) or not cases.get(other):
        return out | {"note": f"arm {arm if not cases.get(arm) else other!r} did not run"}
    diff = paired(cases[arm][metric], cases[other][metric], n_boot=n_boot, seed=seed)
    if not diff["n"]:
        return out | {"note": "no case scored by both arms"}
    lo, hi = diff["diff_ci"]
    return out | {
        "estimate": diff["diff"],
        "ci": [lo, hi],
        "n": diff["n"],
        "verdict": verdict(lo, hi, threshold, strict=strict),
    }


def cost_claim(arms: Mapping[str, Mapping[str, Any] | None], max_ratio: float) -> dict:
    """ "Filtered at a third of the cost": train_tokens of filtered over full (a fact)."""
    full, filtered = arms.get("full") or {}, arms.get("filtered") or {}
    out: dict[str, Any] = {
        "claim": "filtered at a third of the cost",
        "metric": "train_tokens ratio filtered / full",
        "arms": ["filtered", "full"],
        "threshold": max_ratio,
        "estimate": None,
        "ci": None,
        "verdict": "inconclusive",
    }
    if not full.get("train_tokens") or filtered.get("train_tokens") is None:
        return out | {"note": "train_tokens missing"}
    ratio = filtered["train_tokens"] / full["train_tokens"]
    return out | {
        "estimate": round(ratio, 4),
        "verdict": "supported" if ratio <= max_ratio + _EPS else "not supported",
    }


def claims(
    arms: Mapping[str, Mapping[str, Any] | None],
    cases: Mapping[str, Mapping[str, Mapping[str, float | None]] | None],
    *,
    margin: float,
    max_cost_ratio: float,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict]:
    """Table 1's claims from the arms' metrics (`arms[arm]`: its table1 json) and per-case
    scores (`cases[arm][metric]`: {case id: 0/1}); one entry per claim and metric."""
    kw = {"n_boot": n_boot, "seed": seed}
    out = []
    for metric in METRICS:
        out.append(
            comparison(
                "filtered matches full", cases, "filtered", "full", metric, threshold=-margin, **kw
            )
        )
    out.append(cost_claim(arms, max_cost_ratio))
    for metric in METRICS:
        out.append(
            comparison(
                "equal compute: filtered at full's steps matches full",
                cases,
                "equal_compute",
                "full",
                metric,
                threshold=-margin,
                **kw,
            )
        )
    for metric in METRICS:
        out.append(
            comparison(
                "filtering beats random",
                cases,
                "filtered",
                "random",
                metric,
                threshold=0.0,
                strict=True,
                **kw,
            )
        )
    return out


def case_table(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float | None]]:
    """cases.jsonl rows ({id, generated, ranked}) as {metric: {case id: score}}."""
    return {m: {str(r["id"]): r.get(m) for r in rows} for m in METRICS}
