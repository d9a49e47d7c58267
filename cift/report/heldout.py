"""Final production and the base on the held-out sets: the global test set (the generator's
templates) and the probe set (patients' own words), side by side for the page and W&B, with
the probe's paired difference final − base.

Both come from reports/continual.json (`global`, `probe`); a set the run did not score is left
out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SETS = {"global": "global test", "probe": "probe (patients' own words)"}
COLUMNS = [
    "set",
    "model",
    "n",
    "accuracy",
    "accuracy_ci",
    "ranked_accuracy",
    "ranked_accuracy_ci",
    "fault_rate",
]
DIFF_COLUMNS = ["score", "diff", "diff_ci", "n", "excludes_zero"]


def score_rows(continual: Mapping[str, Any] | None) -> list[dict]:
    """One row per (set, model) that ran: n scored, both scores with intervals, fault rate."""
    rows = []
    for key, label in SETS.items():
        roles = (continual or {}).get(key) or {}
        for role in ("final", "base"):
            m = roles.get(role)
            if isinstance(m, Mapping):
                rows.append(
                    {"set": label, "model": role, "n": m.get("n_scored")}
                    | {c: m.get(c) for c in COLUMNS[3:]}
                )
    return rows


def probe_diff_rows(continual: Mapping[str, Any] | None) -> list[dict]:
    """The probe's paired differences final − base: one row per score."""
    vs_base = ((continual or {}).get("probe") or {}).get("vs_base") or {}
    return [
        {"score": score} | {c: d.get(c) for c in DIFF_COLUMNS[1:]} for score, d in vs_base.items()
    ]


def probe_headline(continual: Mapping[str, Any] | None) -> dict[str, Any]:
    """metrics.json's `probe` group (scalars; an interval is `_lo`/`_hi`): final production's
    scores and fault rate, the base's, and the paired differences (null when not scored)."""
    probe = (continual or {}).get("probe") or {}
    final, base = probe.get("final") or {}, probe.get("base") or {}
    vs_base = probe.get("vs_base") or {}
    out: dict[str, Any] = {"n": final.get("n_scored")}
    for key in ("accuracy", "ranked_accuracy"):
        lo, hi = final.get(f"{key}_ci") or [None, None]
        diff = vs_base.get(key) or {}
        dlo, dhi = diff.get("diff_ci") or [None, None]
        suffix = "" if key == "accuracy" else "_ranked"
        out |= {key: final.get(key), f"{key}_lo": lo, f"{key}_hi": hi}
        out |= {f"base_{key}": base.get(key)}
        out |= {f"vs_base{suffix}": diff.get("diff")}
        out |= {f"vs_base{suffix}_lo": dlo, f"vs_base{suffix}_hi": dhi}
    out |= {"fault_rate": final.get("fault_rate"), "base_fault_rate": base.get("fault_rate")}
    return out
