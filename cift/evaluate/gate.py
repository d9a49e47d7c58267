"""The promotion gate: candidate vs deployed on VALIDATION metrics only (test splits are reporting).

Four terms, each able to block on its own:

* accuracy   — paired-bootstrap non-inferiority on this batch's validation split: the lower
  bound of the (1 − alpha) interval of mean(candidate − deployed) over the same cases must not
  fall below −margin (per-case scores of the configured metric: ranked or generated accuracy);
* forgetting — the same test on the earlier batches' validation splits: `pooled` (the default) as
  one test on all their cases together, `per_batch` as one test per batch, each able to block
  (a family of tests: a candidate equal to the deployed model on every batch is blocked by one
  of them ever more surely as batches accumulate, so per-batch results are reported, pooled
  decides);
* safety     — no new safety violation: with per-case results (`safety_cases`: case id -> list
  of violations) no case may get a violation the deployed model's answer to it did not have;
  with counts only, the candidate's count must not exceed the deployed model's;
* judge      — the upper bound of the 95 % bootstrap interval of the pairwise win rate ≥ 0.5;
  "inconclusive" (and skipped) when the judge agreed with itself across the two orders on fewer
  than `min_consistency` of the pairs, "skipped" when there is no judge result. A judge whose
  calibration accuracy is below `min_calibration` is no evidence: the decision records
  "judge": "uninformative (calibration 0.xx)" instead of a term.

A point estimate never decides: a tie passes only because its interval stays above −margin, and
losing one case of many blocks only when the interval says the candidate may be worse by more
than the margin. The decision is plain data (JSON-ready) for the deploy step; every accuracy
and forgetting comparison records its estimate, interval and verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cift.evaluate.judge import calibration_note
from cift.evaluate.metrics import paired_diff_ci

_EPS = 1e-12  # float slack so an exactly-at-threshold value is not failed by rounding
METRICS = ("ranked", "generated", "direct")
FORGETTING = ("pooled", "per_batch")


def _count(value: Any) -> int:
    """A safety violation count given as an int or as count_violations()'s dict."""
    if isinstance(value, Mapping):
        value = value.get("total")
    if value is None:
        raise ValueError("safety_violations missing")
    return int(value)


def non_inferiority(
    cand: Mapping[str, float] | None,
    dep: Mapping[str, float] | None,
    *,
    margin: float,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """Paired bootstrap of mean(candidate − deployed) over the cases both scored ({case id:
    score}); verdict "non-inferior" when the interval's lower bound ≥ −margin, "inferior" when
    its upper bound < −margin, "inconclusive" when it holds −margin (the gate blocks on both: a
    promotion needs evidence), "missing" when either side has no scores."""
    if not cand or not dep:
        return {"verdict": "missing", "n": 0, "margin": margin}
    ids = sorted(set(cand) & set(dep))
    if not ids:
        return {"verdict": "missing", "n": 0, "margin": margin}
    a = [float(cand[i]) for i in ids]
    b = [float(dep[i]) for i in ids]
    diff = paired_diff_ci(a, b, n_boot=n_boot, seed=seed, alpha=alpha)
    lo, hi = diff["diff_ci"]
    return {
        "n": len(ids),
        "candidate": sum(a) / len(a),
        "deployed": sum(b) / len(b),
        "estimate": diff["diff"],
        "interval": diff["diff_ci"],
        "margin": margin,
        "verdict": (
            "non-inferior"
            if lo >= -margin - _EPS
            else "inferior"
            if hi < -margin - _EPS
            else "inconclusive"
        ),
    }


def case_scores(rows: list[Mapping[str, Any]], metric: str) -> dict[str, float]:
    """{case id: 0/1} of one split's evaluation rows for the gate: "ranked" = the gold condition
    ranked first after the generated answer, "generated" = the generated answer's diagnosis is
    right, "direct" = the gold ranked first right after the prompt (`cift.evaluate.known`'s
    rows: no answer generated); cases without a gold (or without a rank) are left out."""
    if metric not in METRICS:
        raise ValueError(f"gate.metric: {metric!r} is not one of {METRICS}")
    if metric == "direct":
        return {r["id"]: float(bool(r["known"])) for r in rows if r.get("known") is not None}
    if metric == "ranked":
        return {r["id"]: float(r["rank"] == 1) for r in rows if r.get("rank") is not None}
    return {r["id"]: float(bool(r["correct"])) for r in rows if r.get("correct") is not None}


def _why(test: dict, what: str, batch: str) -> str | None:
    if test["verdict"] == "non-inferior":
        return None
    if test["verdict"] == "missing":
        return f"{what}: no paired validation scores for batch {batch!r}"
    lo, hi = test["interval"]
    return (
        f"{what} on {batch!r} validation: candidate − deployed {test['estimate']:+.3f} "
        f"[{lo:+.3f}, {hi:+.3f}] (n={test['n']}), lower bound below −{test['margin']}"
    )


def _accuracy_term(cand: Mapping, dep: Mapping, batch: str, **test_kw: Any) -> dict:
    test = non_inferiority(cand.get(batch), dep.get(batch), **test_kw)
    reason = _why(test, "accuracy", batch)
    return {"batch": batch, **test, "pass_": reason is None, "reason": reason}


def _forgetting_term(
    cand: Mapping, dep: Mapping, batch: str, mode: str = "per_batch", **test_kw: Any
) -> dict:
    per: dict[str, dict] = {}
    reasons = []
    earlier = sorted(b for b in dep if b != batch and dep[b])  # none: nothing to forget
    for b in earlier:
        test = non_inferiority(cand.get(b), dep[b], **test_kw)
        reason = _why(test, "forgetting", b)
        per[b] = {**test, "pass": reason is None}
        if reason:
            reasons.append(reason)
    term: dict[str, Any] = {"margin": test_kw["margin"], "mode": mode, "batches": per}
    if mode == "pooled" and earlier:
        pooled = non_inferiority(  # batch-qualified ids: one case per (batch, id)
            {f"{b}/{i}": s for b in earlier for i, s in (cand.get(b) or {}).items()},
            {f"{b}/{i}": s for b in earlier for i, s in dep[b].items()},
            **test_kw,
        )
        reason = _why(pooled, "forgetting", "+".join(earlier))
        reasons = [reason] if reason else []
        term["pooled"] = pooled
    return term | {"pass_": not reasons, "reason": "; ".join(reasons) or None}


def _safety_term(cand: Mapping, dep: Mapping) -> dict:
    c, d = _count(cand.get("safety_violations")), _count(dep.get("safety_violations"))
    cases_c, cases_d = cand.get("safety_cases"), dep.get("safety_cases")
    if cases_c is not None and cases_d is not None:
        # per case: a violation the deployed model's answer to the same case did not have
        new = {
            case: sorted(set(found) - set(cases_d.get(case) or ()))
            for case, found in cases_c.items()
        }
        new = {case: v for case, v in new.items() if v}
        n_new = sum(len(v) for v in new.values())
        return {
            "candidate": c,
            "deployed": d,
            "new": n_new,
            "new_cases": new,
            "pass_": not new,
            "reason": None if not new else f"{n_new} new safety violations in {len(new)} cases",
        }
    ok = c <= d
    return {
        "candidate": c,
        "deployed": d,
        "pass_": ok,
        "reason": None if ok else f"new safety violations: {c} > deployed {d}",
    }


def _judge_term(judge: Mapping | None, min_consistency: float) -> dict:
    if not judge or not judge.get("n"):
        return {"status": "skipped", "pass_": True, "reason": None, "note": "no judge result"}
    consistency = judge.get("consistency")
    ci = judge.get("win_rate_ci")
    term = {
        "n": judge["n"],
        "win_rate": judge.get("win_rate"),
        "win_rate_ci": ci,
        "consistency": consistency,
        "min_consistency": min_consistency,
        "wins": judge.get("wins"),
        "losses": judge.get("losses"),
        "ties": judge.get("ties"),
    }
    if consistency is None or consistency < min_consistency:
        note = (
            f"judge inconclusive: consistency {consistency if consistency is not None else 'n/a'}"
            f" < {min_consistency}; term skipped"
        )
        return {**term, "status": "inconclusive", "pass_": True, "reason": None, "note": note}
    upper = ci[1] if ci else None
    ok = upper is not None and upper >= 0.5 - _EPS
    reason = None if ok else f"judge: win-rate 95% CI upper bound {upper} < 0.5"
    return {**term, "status": "pass" if ok else "fail", "pass_": ok, "reason": reason}


def gate_decision(
    candidate: Mapping[str, Any],
    deployed: Mapping[str, Any],
    *,
    batch: str,
    margin: float = 0.05,
    metric: str = "ranked",
    forgetting: str = "per_batch",
    judge: Mapping[str, Any] | None = None,
    min_consistency: float = 0.6,
    judge_calibration: float | None = None,
    min_calibration: float = 0.75,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """Decide whether to promote the candidate.

    candidate / deployed: {"val_scores": {batch name: {case id: score of `metric` (0/1)}},
    "safety_violations": int (or count_violations()'s dict), optionally "safety_cases": {case
    id: [violations]}}, both measured on the same validation splits. `batch` is this batch's
    name; every other batch in the deployed model's val_scores is an earlier one. `metric` names
    the scores (recorded, not computed here); `forgetting` is "pooled" or "per_batch". judge:
    judge_pairs()'s result (candidate vs deployed) or None. judge_calibration: the judge's
    `cift judge calibrate` accuracy (None: not calibrated, the judge term stands as it is).

    Returns {"promote", "metric", "terms": {"accuracy", "forgetting", "safety", "judge"} (each
    with "pass"; accuracy and each forgetting batch with estimate, interval and verdict; judge
    also with "status": pass|fail|inconclusive|skipped), "reasons" (what blocked), "notes"}.
    """
    if metric not in METRICS:
        raise ValueError(f"gate.metric: {metric!r} is not one of {METRICS}")
    if forgetting not in FORGETTING:
        raise ValueError(f"gate.forgetting: {forgetting!r} is not one of {FORGETTING}")
    if margin < 0:
        raise ValueError(f"gate.margin: must be >= 0, got {margin}")
    cand_acc = candidate.get("val_scores") or {}
    dep_acc = deployed.get("val_scores") or {}
    test_kw = {"margin": margin, "n_boot": n_boot, "seed": seed, "alpha": alpha}
    raw = {
        "accuracy": _accuracy_term(cand_acc, dep_acc, batch, **test_kw),
        "forgetting": _forgetting_term(cand_acc, dep_acc, batch, forgetting, **test_kw),
        "safety": _safety_term(candidate, deployed),
        "judge": _judge_term(judge, min_consistency),
    }
    uninformative = judge_calibration is not None and calibration_note(
        judge_calibration, min_calibration
    )
    if uninformative:
        raw["judge"] = {"pass_": True, "note": f"judge {uninformative}: term left out"}
    terms: dict[str, dict] = {}
    reasons: list[str] = []
    notes: list[str] = []
    for name, term in raw.items():
        reason, note = term.pop("reason", None), term.pop("note", None)
        term["pass"] = bool(term.pop("pass_"))
        terms[name] = term
        if reason:
            reasons.append(reason)
        if note:
            notes.append(note)
    if uninformative:  # recorded instead of a term; it neither passes nor blocks
        terms["judge"] = uninformative  # type: ignore[assignment]
    return {
        "promote": all(t["pass"] for t in terms.values() if isinstance(t, dict)),
        "batch": batch,
        "metric": metric,
        "terms": terms,
        "reasons": reasons,
        "notes": notes,
    }
