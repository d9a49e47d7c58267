"""Judge calibration: can the configured judge tell a correct answer from a planted flaw?

Planted pairs come from the KB: a record of a condition, its reference answer (the project's
renderer, cift/data/reference.py; written out by cift/data/answer.py) against a corrupted copy of
four kinds —

* wrong_diagnosis  — the reference answer the same record would get for a confusable condition
  (coherent reasoning, wrong conclusion and advice);
* invented_finding — a step citing an examination finding the record does not contain;
* missing_referral — an urgent condition's answer without its emergency referral;
* cut_short        — the reasoning stopped after the history, straight to the conclusion.

Each pair is judged in both orders, reference-guided as the gate judges (the reference shown is the
canonical rendering; the correct answer of the pair is a rewording of it). Accuracy is the share
of pairs whose outcome is a win for the correct answer; a judge that always says "tie" or always
prefers the first answer scores 0. The result is cached per judge config (judge settings, the
judge model's weight hash, KB and prompt contents) under `<cache dir>/judge_calibration/`; the
gate and the continual report use the judge only when its accuracy is ≥ `judge.min_calibration`.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cift.evaluate.judge import DEFAULT_PROMPT_PATH, calibration_note, judge_pairs

SUMMARY_KEYS = ("pairs", "accuracy", "tie_rate", "position_bias", "judge", "min_calibration")
KINDS = ("wrong_diagnosis", "invented_finding", "missing_referral", "cut_short")
VERSION = 1  # bump when the planted pairs or the scoring change: old cached results go stale
ROUTINE_ADVICE = (
    "Rest at home, drink plenty of fluids and book a routine appointment with your GP if it has "
    "not settled within a week."
)


def _render(structured: dict) -> str:
    from cift.data.answer import render_answer

    return render_answer(structured)


def _wrong_diagnosis(kb: Any, record: dict, good: dict, rng: random.Random) -> dict:
    from cift.data.reference import reference_answer

    cond = kb.by_name(record["condition"])
    others = [n for n in cond.confusable_with if n in kb.names and n != cond.name]
    other = rng.choice(others or [n for n in kb.names if n != cond.name])
    return reference_answer(kb, {**record, "condition": other}, rng)


def _invented_finding(kb: Any, record: dict, good: dict, rng: random.Random) -> dict:
    from cift.data.validity import faithfulness_violations

    cond = kb.by_name(record["condition"])
    signs = sorted({e.name for c in kb.conditions if c.name != cond.name for e in c.exam})
    rng.shuffle(signs)
    for sign in signs:
        step = f"The examination also shows {sign}, which supports {cond.name}."
        if faithfulness_violations([step], record, kb):  # a finding the record lacks
            steps = list(good["steps"])
            steps.insert(3, step)  # after the findings: presented as one of them
            return {**good, "steps": steps}
    raise ValueError(f"{kb.source}: no examination finding absent from record {record['id']}")


def _missing_referral(kb: Any, record: dict, good: dict, rng: random.Random) -> dict:
    """An emergency answered with routine advice (the KB's own advice for an urgent condition
    sends the patient to hospital too, so all of it goes)."""
    if not kb.by_name(record["condition"]).urgent:
        raise ValueError(f"record {record['id']}: {record['condition']} is not urgent")
    steps = [re.sub(r", which needs emergency care\.$", ".", s) for s in good["steps"]]
    return {**good, "steps": steps, "advice": ROUTINE_ADVICE}


def _cut_short(kb: Any, record: dict, good: dict, rng: random.Random) -> dict:
    return {**good, "steps": [*good["steps"][:2], good["steps"][-1]]}


CORRUPT = {
    "wrong_diagnosis": _wrong_diagnosis,
    "invented_finding": _invented_finding,
    "missing_referral": _missing_referral,
    "cut_short": _cut_short,
}


def planted_pairs(kb: Any, n_pairs: int, seed: int, styles: Sequence[str]) -> list[dict]:
    """`n_pairs` judge items, the kinds in turn: {"id", "kind", "condition", "question",
    "candidate" (the correct answer), "baseline" (its corrupted copy), "reference"}."""
    from cift.data.records import sample_record
    from cift.data.reference import reference_answer
    from cift.data.sample import sample_task, user_message

    if n_pairs < 1:
        raise ValueError(f"judge.calibration.pairs must be >= 1, got {n_pairs}")
    urgent = [c.name for c in kb.conditions if c.urgent]
    if not urgent:
        raise ValueError(f"{kb.source}: no urgent condition to plant a missing referral in")
    rng = random.Random(f"judge-calibration-{seed}")
    items = []
    for i in range(n_pairs):
        kind = KINDS[i % len(KINDS)]
        cond = rng.choice(urgent if kind == "missing_referral" else list(kb.names))
        record = sample_record(kb, cond, rng, record_id=f"cal-{i + 1:03d}", batch="calibration")
        task = sample_task(record, kb, list(styles), seed)
        good = reference_answer(kb, record, rng)  # reworded: not a verbatim copy of the reference
        bad = CORRUPT[kind](kb, record, good, rng)
        if _render(bad) == _render(good):
            raise ValueError(
                f"calibration pair {record['id']} ({kind}): corruption changed nothing"
            )
        items.append(
            {
                "id": record["id"],
                "kind": kind,
                "condition": record["condition"],
                "question": user_message(task["instruction"], task["input"]),
                "candidate": _render(good),
                "baseline": _render(bad),
                "reference": _render(reference_answer(kb, record)),
            }
        )
    return items


def calibrate(judge: Any, items: Sequence[dict], **judge_kw: Any) -> dict:
    """Judge the planted pairs (both orders); {"pairs", "accuracy", "tie_rate", "position_bias"
    ((A verdicts − B verdicts) / judgments: +1 always the first answer), "judge", "by_kind",
    "consistency", "method"}."""
    started = time.perf_counter()
    res = judge_pairs(judge, items, **judge_kw)
    rows = res["rows"]
    n = len(rows)
    verdicts = [v for r in rows for v in (r["verdict_candidate_a"], r["verdict_candidate_b"])]
    by_kind: dict[str, dict] = {}
    for item, row in zip(items, rows, strict=True):
        k = by_kind.setdefault(item["kind"], {"pairs": 0, "correct": 0})
        k["pairs"] += 1
        k["correct"] += row["outcome"] == "win"
    judge_name = getattr(judge, "name", type(judge).__name__)
    model = getattr(judge, "model", None)
    return {
        "pairs": n,
        "accuracy": res["wins"] / n if n else None,
        "tie_rate": res["ties"] / n if n else None,
        "position_bias": (verdicts.count("A") - verdicts.count("B")) / len(verdicts)
        if verdicts
        else None,
        "judge": f"{judge_name} ({model})" if isinstance(model, str) else judge_name,
        "by_kind": {
            kind: {**v, "accuracy": v["correct"] / v["pairs"]} for kind, v in by_kind.items()
        },
        "consistency": res["consistency"],
        "method": res["method"],
        "reference_guided": all(r["reference_guided"] for r in rows),
        "seconds": round(time.perf_counter() - started, 1),
    }


def calibration_key(cfg: DictConfig, judge: Any) -> str:
    """Hash of what decides the calibration: the judge config, the judge model's weights (local
    judges), the KB and the prompt file contents, and this module's VERSION."""
    from cift.evaluate.build import base_hash
    from cift.kb.loader import resolve_path

    spec = getattr(judge, "spec", None)
    prompt = cfg.judge.get("prompt") or DEFAULT_PROMPT_PATH
    parts = {
        "version": VERSION,
        "judge": {  # the threshold decides what a result means, not the result
            k: v
            for k, v in OmegaConf.to_container(cfg.judge, resolve=True).items()
            if k != "min_calibration"
        },
        "model_hash": base_hash(spec) if spec is not None else None,
        "kb": hashlib.sha256(resolve_path(cfg.data.kb).read_bytes()).hexdigest(),
        "prompt": hashlib.sha256(Path(prompt).read_bytes()).hexdigest(),
        "styles": list(cfg.data.styles),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def calibration_path(cfg: DictConfig, judge: Any) -> Path:
    from cift.models.paths import cache_dir

    return cache_dir() / "judge_calibration" / f"{calibration_key(cfg, judge)[:24]}.json"


def judge_calibration(cfg: DictConfig, judge: Any, refresh: bool = False) -> dict:
    """The configured judge's calibration, from the cache or measured now (and cached), with
    `min_calibration` and whether the judge reaches it ("informative")."""
    from cift.evaluate.build import judge_settings
    from cift.io.jsonl import write_json_atomic
    from cift.kb import load_kb

    path = calibration_path(cfg, judge)
    if path.is_file() and not refresh:
        result = json.loads(path.read_text(encoding="utf-8"))
    else:
        c = cfg.judge.calibration
        kb = load_kb(cfg.data.kb)
        items = planted_pairs(kb, int(c.pairs), int(c.seed), list(cfg.data.styles))
        result = calibrate(judge, items, **judge_settings(cfg, seed=int(c.seed)))
        write_json_atomic(path, result)
    minimum = float(cfg.judge.min_calibration)
    informative = calibration_note(result["accuracy"], minimum) is None
    return {**result, "min_calibration": minimum, "informative": informative, "cache": str(path)}


def judge_status(cfg: DictConfig) -> tuple[Any | None, dict | None, str | None]:
    """(judge, calibration summary, note): the configured judge when it passed calibration, else
    None with the note ("uninformative (calibration 0.xx)") the gate and the report record; all
    None when `judge=none`."""
    from cift.evaluate.build import build_judge

    judge = build_judge(cfg)
    if judge is None:
        return None, None, None
    calibration = judge_calibration(cfg, judge)
    note = calibration_note(calibration["accuracy"], float(cfg.judge.min_calibration))
    summary = {k: calibration.get(k) for k in SUMMARY_KEYS}
    return (None if note else judge), summary, note
