"""Table 1's claims from per-case scores: every verdict reached by real paired bootstraps."""

from __future__ import annotations

import pytest

from cift.report.claims import VERDICTS, claims, comparison, cost_claim, verdict

N = 200


def scores(correct: set[int], n: int = N) -> dict[str, dict[str, float]]:
    """{metric: {case id: 0/1}}, the same cases right under both metrics."""
    by_id = {f"t1-{i:04d}": float(i in correct) for i in range(n)}
    return {"generated": by_id, "ranked": dict(by_id)}


def compare(arm: set[int], other: set[int], n: int = N, **kw) -> dict:
    cases = {"a": scores(arm, n), "b": scores(other, n)}
    kw = {"threshold": -0.05, "n_boot": 2000, "seed": 3} | kw
    return comparison("a vs b", cases, "a", "b", "generated", **kw)


def test_verdict_rule_at_the_threshold():
    assert verdict(-0.04, 0.1, -0.05) == "supported"
    assert verdict(-0.2, -0.06, -0.05) == "not supported"
    assert verdict(-0.1, 0.0, -0.05) == "inconclusive"
    assert verdict(-0.05, 0.1, -0.05) == "inconclusive"  # "above", not "at"
    assert verdict(0.0, 0.0, 0.0, strict=True) == "not supported"  # no gain at all
    assert verdict(0.0, 0.0, 0.0) == "inconclusive"


def test_non_inferiority_verdicts_from_paired_bootstraps():
    half = set(range(N // 2))
    same = compare(half, half)  # identical answers: difference 0, interval [0, 0]
    assert same["verdict"] == "supported" and same["estimate"] == 0.0 and same["n"] == N
    worse = compare(set(range(N // 4)), half)  # loses a quarter of the cases
    assert worse["verdict"] == "not supported"
    assert worse["estimate"] == pytest.approx(-0.25) and worse["ci"][1] < -0.05
    # 20 cases, one lost: the interval holds −margin
    unsure = compare(set(range(9)), set(range(10)), n=20)
    assert unsure["verdict"] == "inconclusive"
    assert unsure["ci"][0] < -0.05 < unsure["ci"][1]


def test_superiority_verdicts():
    kw = {"threshold": 0.0, "strict": True}
    better = compare(set(range(150)), set(range(50)), **kw)
    assert better["verdict"] == "supported" and better["ci"][0] > 0
    assert compare(set(range(50)), set(range(50)), **kw)["verdict"] == "not supported"
    # one case gained, one lost elsewhere, among 20: no evidence either way
    mixed = compare({0, 1, 2}, {0, 1, 3}, n=20, **kw)
    assert mixed["verdict"] == "inconclusive" and mixed["estimate"] == 0.0


def test_cost_claim_is_a_ratio_of_tokens():
    arms = {"full": {"train_tokens": 9000}, "filtered": {"train_tokens": 3000}}
    got = cost_claim(arms, 0.4)
    assert got["estimate"] == pytest.approx(1 / 3, abs=1e-4) and got["verdict"] == "supported"
    arms["filtered"]["train_tokens"] = 5000
    assert cost_claim(arms, 0.4)["verdict"] == "not supported"
    assert cost_claim({"full": None, "filtered": None}, 0.4)["verdict"] == "inconclusive"


def test_claims_cover_every_comparison_and_metric_missing_arms_inconclusive():
    half = set(range(N // 2))
    cases = {
        "full": scores(half),
        "filtered": scores(half | {N - 1}),
        "random": scores(set(range(N // 4))),
        "equal_compute": None,  # did not run
    }
    arms = {"full": {"train_tokens": 900}, "filtered": {"train_tokens": 310}}
    out = claims(arms, cases, margin=0.05, max_cost_ratio=0.4, n_boot=1000, seed=1)
    by = {(c["claim"], c["metric"]): c for c in out}
    assert set(by) == {
        ("filtered matches full", "accuracy"),
        ("filtered matches full", "ranked_accuracy"),
        ("filtered at a third of the cost", "train_tokens ratio filtered / full"),
        ("equal compute: filtered at full's steps matches full", "accuracy"),
        ("equal compute: filtered at full's steps matches full", "ranked_accuracy"),
        ("filtering beats random", "accuracy"),
        ("filtering beats random", "ranked_accuracy"),
    }
    assert all(c["verdict"] in VERDICTS and "estimate" in c and "ci" in c for c in out)
    assert by[("filtered matches full", "accuracy")]["verdict"] == "supported"
    assert by[("filtering beats random", "ranked_accuracy")]["verdict"] == "supported"
    missing = by[("equal compute: filtered at full's steps matches full", "accuracy")]
    assert missing["verdict"] == "inconclusive" and missing["estimate"] is None
    # a case scored by one arm only (no rank) is left out of the pairing
    cases["full"]["ranked"]["t1-0000"] = None
    out = claims(arms, cases, margin=0.05, max_cost_ratio=0.4, n_boot=1000, seed=1)
    assert next(c for c in out if c["metric"] == "ranked_accuracy")["n"] == N - 1
