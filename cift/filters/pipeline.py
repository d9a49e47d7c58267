"""Run filter steps in order, with per-sample stats and verdicts (the data-juicer pattern).

`run_filter` is the whole `filter` stage minus file I/O: every input sample ends in exactly one
verdict, kept or dropped by one named step with a reason, and the accounting is checked.
`build_steps` turns the `filter` config node into step objects: a node with `_target_` is
instantiated by Hydra, otherwise the step name is looked up in `STEPS`.
"""

from __future__ import annotations

import importlib
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cift.filters.base import FilterContext, FilterStep
from cift.filters.diversity import DiversityFilter
from cift.filters.length import LengthFilter
from cift.filters.select import RandomFraction, TopFraction

STEPS: dict[str, type] = {
    "length": LengthFilter,
    "diversity": DiversityFilter,
    "select": TopFraction,
    "random": RandomFraction,
}
# Registered by dotted path so that importing the pipeline does not import the scoring engine.
_LAZY_STEPS = {
    "ifd": "cift.filters.ifd.IFDFilter",
    "simdiv": "cift.filters.simdiv.SimDivFilter",
    "gdig": "cift.filters.gdig.GDIGFilter",
}
_QUANTILES = {"p10": 10, "p50": 50, "p90": 90}


class AccountingError(RuntimeError):
    """A step broke the one-verdict-per-sample invariant (a bug, never a data problem)."""


def _step_class(name: str) -> type:
    if name in STEPS:
        return STEPS[name]
    if name in _LAZY_STEPS:
        module, _, attr = _LAZY_STEPS[name].rpartition(".")
        return getattr(importlib.import_module(module), attr)
    raise ValueError(
        f"unknown filter step {name!r}: give filter.{name}._target_ or use one of "
        f"{sorted([*STEPS, *_LAZY_STEPS])}"
    )


def build_steps(filter_cfg: Mapping[str, Any]) -> list[FilterStep]:
    """The steps named in `filter_cfg.steps`, in order, each configured by `filter_cfg[name]`.

    A node with `_target_` goes through `hydra.utils.instantiate`; otherwise the registry class
    gets the node's keys as keyword arguments. A step's `name` defaults to its key in `steps`.
    """
    from omegaconf import DictConfig, OmegaConf

    steps: list[FilterStep] = []
    for name in list(filter_cfg.get("steps") or []):
        node = filter_cfg.get(name) or {}
        if isinstance(node, DictConfig):
            node = OmegaConf.to_container(node, resolve=True)
        node = dict(node)
        if "_target_" in node:
            from hydra.utils import instantiate

            step = instantiate(node)
            if "name" not in node:
                step.name = name
        else:
            step = _step_class(name)(**{"name": name, **node})
        steps.append(step)
    return steps


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _quantiles(rows: Sequence[dict]) -> dict[str, dict[str, float]]:
    """p10/p50/p90 of every numeric stat present (over the samples that have it)."""
    values: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            if key != "id" and _numeric(value):
                values.setdefault(key, []).append(float(value))
    return {
        key: {q: float(np.percentile(vals, p)) for q, p in _QUANTILES.items()}
        for key, vals in values.items()
    }


def _check_drops(step: FilterStep, drops: Mapping[str, str], alive: set[str]) -> None:
    stray = [sid for sid in drops if sid not in alive]
    if stray:
        raise AccountingError(
            f"step {step.name!r} dropped {len(stray)} sample(s) it was not given, e.g. {stray[0]!r}"
        )
    bad = [sid for sid, reason in drops.items() if not isinstance(reason, str) or not reason]
    if bad:
        raise AccountingError(f"step {step.name!r} gave no reason for dropping {bad[0]!r}")


def run_filter(
    samples: Sequence[dict], steps: Sequence[FilterStep], ctx: FilterContext
) -> tuple[list[dict], list[dict], list[dict], dict]:
    """Pass `samples` through `steps` in order; returns (kept, rejected, scores, summary).

    kept: the surviving samples, in input order. rejected: each dropped sample plus
    {"filter": {"step", "reason"}}, in input order. scores: one row per input sample, in input
    order: "id", every stat any step wrote (None where a step never saw the sample), "flags",
    "verdict" ("kept"|"dropped"), "step" and "reason" (None when kept). summary: {"n_in",
    "kept", "dropped", "steps": {name: {"in", "dropped", "reasons"}}, "quantiles":
    {stat: {"p10", "p50", "p90"}}, "flags": {flag: count}, "shortfall"}. Sets `ctx.n_in`.
    Raises ValueError on duplicate ids or step names, AccountingError if a step misbehaves.
    """
    ids = [s["id"] for s in samples]
    if len(set(ids)) != len(ids):
        dup = next(i for i, n in Counter(ids).items() if n > 1)
        raise ValueError(f"duplicate sample id {dup!r}: verdicts are kept per id")
    names = [step.name for step in steps]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate step names {names}: give each step its own name")
    ctx.n_in = len(samples)
    for key in ("shortfall", "wanted"):  # a reused context must not report an old run's
        ctx.extra.pop(key, None)
    stats: dict[str, dict] = {sid: {"id": sid, "flags": []} for sid in ids}
    verdict: dict[str, tuple[str, str]] = {}  # id -> (step, reason) for dropped samples
    per_step: dict[str, dict] = {}
    alive = list(samples)
    for step in steps:
        drops = step.apply(alive, stats, ctx)
        _check_drops(step, drops, {s["id"] for s in alive})
        per_step[step.name] = {
            "in": len(alive),
            "dropped": len(drops),
            "reasons": dict(sorted(Counter(drops.values()).items())),
        }
        verdict.update((sid, (step.name, reason)) for sid, reason in drops.items())
        alive = [s for s in alive if s["id"] not in drops]

    columns = list(dict.fromkeys(k for sid in ids for k in stats[sid] if k != "flags"))
    scores: list[dict] = []
    rejected: list[dict] = []
    for sample in samples:
        sid = sample["id"]
        step_name, reason = verdict.get(sid, (None, None))
        row = {key: stats[sid].get(key) for key in columns}
        row.update(
            flags=stats[sid]["flags"],
            verdict="kept" if step_name is None else "dropped",
            step=step_name,
            reason=reason,
        )
        scores.append(row)
        if step_name is not None:
            rejected.append({**sample, "filter": {"step": step_name, "reason": reason}})

    n_dropped = sum(s["dropped"] for s in per_step.values())
    if not (len(samples) == len(alive) + n_dropped == len(alive) + len(rejected) == len(scores)):
        raise AccountingError(
            f"n_in={len(samples)} != kept={len(alive)} + dropped={n_dropped} "
            f"(rejected rows {len(rejected)}, score rows {len(scores)})"
        )
    summary = {
        "n_in": len(samples),
        "kept": len(alive),
        "dropped": n_dropped,
        "steps": per_step,
        "quantiles": _quantiles(scores),
        "flags": dict(sorted(Counter(f for r in scores for f in r["flags"]).items())),
        "shortfall": int(ctx.extra.get("shortfall", 0)),
    }
    return alive, rejected, scores, summary
