"""reports/metrics.json: one experiment's headline numbers at a path every experiment shares.

Every other metrics file lives under runs/<experiment>/, so `dvc exp show` gives each
experiment its own columns and `dvc metrics diff` pairs nothing. This file has the same keys in
every experiment (null where a figure is missing) and only scalars (an interval is two keys,
`_lo` and `_hi`: DVC drops lists), so the ablations line up column by column. It records the
experiment it belongs to, which `cift report --exps` checks before it takes a row from it
(`cift.report.exps.own_files`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from cift.report.heldout import probe_headline

HEADLINE = "metrics.json"  # under paths.reports
ARMS = ("base", "full", "filtered", "random", "equal_compute")  # Table 1's arms
SCORES = ("accuracy", "ranked_accuracy")  # generated and ranked diagnosis accuracy
CONTINUAL = ("ACC", "BWT", "FWT", "ACC_ranked", "BWT_ranked", "FWT_ranked")
PROXY = (
    "redundant_selected",
    "repeats_selected",
    "known_selected",
    "known_share",
    "no_gold",
    "selected",
    "final_accuracy",
)


def with_interval(source: Mapping[str, Any] | None, key: str) -> dict[str, float | None]:
    """{key, key_lo, key_hi} from a value and its `key_ci` [lo, hi] (None where missing)."""
    source = source or {}
    ci = source.get(f"{key}_ci") or [None, None]
    return {key: source.get(key), f"{key}_lo": ci[0], f"{key}_hi": ci[1]}


def scores(source: Mapping[str, Any] | None) -> dict[str, float | None]:
    return {k: v for key in SCORES for k, v in with_interval(source, key).items()}


def headline(
    experiment: str,
    summary: Mapping[str, Any],
    table1_runs: Mapping[str, Mapping[str, Any] | None],
    continual: Mapping[str, Any] | None,
    proxy_ablation: Mapping[str, Any],
) -> dict[str, Any]:
    """The headline from the report's inputs: `table1_runs` maps each arm to its table1 stage
    file (a trained arm's holds the base model's scores on the same cases too, used when the
    base arm's own file is missing), `continual` is continual.json, `summary` and
    `proxy_ablation` the report's own files."""
    continual = continual or {}
    arms = {arm: table1_runs.get(arm) for arm in ARMS}
    if not arms["base"]:
        trained = (arms[a] or {} for a in ARMS[1:])
        arms["base"] = next((r["base"] for r in trained if r.get("base")), None)
    final = (continual.get("global") or {}).get("final")
    return {
        "experiment": experiment,
        # the DVC experiment it ran in (`dvc exp run` sets it; null for a plain `dvc repro`)
        "dvc_exp": os.environ.get("DVC_EXP_NAME"),
        "table1": {
            arm: scores(arms[arm])
            | {k: (arms[arm] or {}).get(k) for k in ("train_tokens", "train_seconds", "seconds")}
            for arm in ARMS
        },
        "continual": {k: v for key in CONTINUAL for k, v in with_interval(continual, key).items()},
        "final": scores(final),
        # final production on patients' own words, its fault rate, and final − base
        "probe": probe_headline(continual),
        "promotions": summary.get("promotions"),
        "proxy_ablation": {
            mode: {k: (proxy_ablation.get(mode) or {}).get(k) for k in PROXY}
            for mode in ("static", "dynamic")
        }
        | {"dynamic_vs_static": known_headline(proxy_ablation.get("dynamic_vs_static"))},
    }


def known_headline(comparison: Mapping[str, Any] | None) -> dict[str, Any]:
    """The known-share difference (dynamic − static) over batches 2..N with its interval, the
    exact test's p-value and the claim's verdict (a string: `dvc exp show` lists it)."""
    comparison = comparison or {}
    total = comparison.get("total") or {}
    ci = total.get("diff_ci") or [None, None]
    return {
        "known_share_diff": total.get("diff"),
        "known_share_diff_lo": ci[0],
        "known_share_diff_hi": ci[1],
        "known_p_value": total.get("p_value"),
        "verdict": (comparison.get("claim") or {}).get("verdict"),
    }
