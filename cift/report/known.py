"""The proxy claim by what it is about: does the dynamic proxy select fewer samples the deployed
model already knows?

`known.jsonl` (stage known@<i>) says, per sample either proxy selected on batch i, whether the
model deployed before batch i already ranks its gold condition first (`cift.evaluate.known`).
Per proxy and batch: `known_selected` (selected samples it knows), `selected`, `no_gold` (selected
samples without a KB gold condition: not counted) and `known_share` = known_selected / (selected
− no_gold).

The paired comparison, dynamic − static, on identical candidates: the difference of the known
shares with a percentile-bootstrap interval over the candidates either proxy selected (resampled
within each batch, so each batch keeps its size; the candidates neither proxy selected count in
neither share; a resample in which one proxy selects nothing is left out), and the exact McNemar
test on the discordant known candidates (known and selected by one proxy only; a two-sided
binomial test of dynamic-only vs static-only at 1/2). The claim "the dynamic proxy selects fewer
known samples" is supported when the interval lies below 0, not supported when it lies at or
above 0, inconclusive otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

MODES = ("static", "dynamic")  # the proxy ablation's two selections
CLAIM = "the dynamic proxy selects fewer known samples than the static proxy"
METHOD = (
    "known_share dynamic - static; percentile bootstrap over the candidates either proxy "
    "selected, resampled within each batch; exact McNemar (binomial) p on discordant known pairs"
)


def read_known(path: Path) -> dict[str, bool | None] | None:
    """sample id -> known (None: no gold condition) from a known.jsonl; None when the file is
    missing (the stage did not run: nothing measured). A bad line names the file and line."""
    import json

    if not path.is_file():
        return None
    out: dict[str, bool | None] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            known = row["known"]
            if known is not None and not isinstance(known, bool):
                raise TypeError(f"known is {known!r}, not true/false/null")
            out[row["id"]] = known
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}:{n}: not a known row ({err})") from err
    return out


def known_counts(
    samples: Sequence[Mapping[str, Any]], known: Mapping[str, bool | None] | None, where: str
) -> dict[str, Any]:
    """{"known_selected", "no_gold", "known_share"} of one selection (None when not measured);
    a selected sample missing from `known` is an error naming `where` (a stale known.jsonl)."""
    if known is None:
        return {"known_selected": None, "no_gold": None, "known_share": None}
    missing = [s["id"] for s in samples if s["id"] not in known]
    if missing:
        raise ValueError(f"{where}: no row for selected samples {missing[:5]} (stale file?)")
    flags = [known[s["id"]] for s in samples]
    counted = [k for k in flags if k is not None]
    return {
        "known_selected": sum(counted),
        "no_gold": len(flags) - len(counted),
        "known_share": sum(counted) / len(counted) if counted else None,
    }


def paired_units(
    static: Sequence[Mapping[str, Any]],
    dynamic: Sequence[Mapping[str, Any]],
    known: Mapping[str, bool | None],
) -> np.ndarray:
    """(n, 3) 0/1 rows (known, selected by static, selected by dynamic), one per candidate either
    proxy selected that has a gold condition."""
    s_ids, d_ids = {s["id"] for s in static}, {s["id"] for s in dynamic}
    ids = sorted(i for i in s_ids | d_ids if known.get(i) is not None)
    return np.array([[known[i], i in s_ids, i in d_ids] for i in ids], dtype=float).reshape(-1, 3)


def _share_diff(k: np.ndarray, s: np.ndarray, d: np.ndarray) -> np.ndarray:
    """known share of dynamic − of static along the last axis (nan where a proxy selected none)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (k * d).sum(-1) / d.sum(-1) - (k * s).sum(-1) / s.sum(-1)


def paired_comparison(
    strata: Sequence[np.ndarray], *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict[str, Any]:
    """dynamic − static known share over `strata` (each `paired_units` of one batch):
    {"n", "diff", "diff_ci", "dynamic_only", "static_only", "p_value"}."""
    from scipy.stats import binomtest

    units = np.concatenate([u for u in strata if len(u)] or [np.zeros((0, 3))])
    k, s, d = units.T
    dynamic_only = int((k * d * (1 - s)).sum())
    static_only = int((k * s * (1 - d)).sum())
    discordant = dynamic_only + static_only
    out: dict[str, Any] = {
        "n": len(units),
        "diff": None,
        "diff_ci": None,
        "dynamic_only": dynamic_only,
        "static_only": static_only,
        "p_value": float(binomtest(dynamic_only, discordant).pvalue) if discordant else None,
    }
    if not len(units) or not s.sum() or not d.sum():
        return out
    rng = np.random.default_rng(seed)
    picks = [  # resampled row indices into `units`, batch by batch
        offset + rng.integers(0, len(u), size=(n_boot, len(u)))
        for offset, u in zip(np.cumsum([0, *(len(u) for u in strata)])[:-1], strata, strict=True)
        if len(u)
    ]
    idx = np.concatenate(picks, axis=1)
    boot = _share_diff(k[idx], s[idx], d[idx])
    out["diff"] = float(_share_diff(k, s, d))
    if np.isfinite(boot).any():  # else no resample held both proxies' selections: no interval
        lo, hi = np.nanquantile(boot, [alpha / 2, 1 - alpha / 2])
        out["diff_ci"] = [float(lo), float(hi)]
    return out


def known_claim(comparison: Mapping[str, Any]) -> dict[str, Any]:
    """{"claim", "estimate", "ci", "verdict"} from the total paired comparison."""
    ci = comparison.get("diff_ci")
    if ci is None:
        verdict = "inconclusive"
    elif ci[1] < 0:
        verdict = "supported"
    elif ci[0] >= 0:
        verdict = "not supported"
    else:
        verdict = "inconclusive"
    return {"claim": CLAIM, "estimate": comparison.get("diff"), "ci": ci, "verdict": verdict}


def known_ablation(
    batches: Sequence[str],
    selections: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]],
    known: Mapping[str, Mapping[str, bool | None] | None],
    where: Mapping[str, str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """For batches 2..N: {"per_batch": {mode: [counts per batch]}, "totals": {mode: counts},
    "comparison": {"method", "per_batch", "total", "claim"}}.

    `selections[mode][batch]` are the selected samples, `known[batch]` from `read_known` (None:
    not measured), `where[batch]` the known file's name for errors.
    """
    per_batch: dict[str, list[dict]] = {m: [] for m in MODES}
    rows, strata = [], []
    for b in batches[1:]:
        k = known.get(b)
        for mode in MODES:
            per_batch[mode].append(known_counts(selections[mode].get(b, []), k, where[b]))
        if k is None:
            rows.append({"batch": b, **paired_comparison([], n_boot=n_boot, seed=seed)})
            continue
        units = paired_units(selections["static"].get(b, []), selections["dynamic"].get(b, []), k)
        strata.append(units)
        rows.append({"batch": b, **paired_comparison([units], n_boot=n_boot, seed=seed)})
    measured = [b for b in batches[1:] if known.get(b) is not None]
    totals = {}
    for mode in MODES:
        counted = [r for r in per_batch[mode] if r["known_selected"] is not None]
        if not counted:
            totals[mode] = {"known_selected": None, "no_gold": None, "known_share": None}
            continue
        known_n, no_gold = (sum(r[key] for r in counted) for key in ("known_selected", "no_gold"))
        gold = sum(len(selections[mode].get(b, [])) for b in measured) - no_gold
        totals[mode] = {
            "known_selected": known_n,
            "no_gold": no_gold,
            "known_share": known_n / gold if gold else None,
        }
    total = paired_comparison(strata, n_boot=n_boot, seed=seed)
    comparison = {
        "method": METHOD,
        "per_batch": rows,
        "total": total,
        "claim": known_claim(total),
    }
    return {"per_batch": per_batch, "totals": totals, "comparison": comparison}


# a proxy's selection counts, in the order the page and W&B show them
PROXY_COUNTS = (
    "selected",
    "known_selected",
    "known_share",
    "no_gold",
    "redundant_selected",
    "repeats_selected",
)


def proxy_modes(proxy: dict) -> list[str]:
    """The proxies proxy_ablation.json holds (`static` only once the ablations ran)."""
    return [m for m in ("static", "dynamic") if isinstance(proxy.get(m), dict)]
