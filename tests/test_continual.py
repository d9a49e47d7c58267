"""ACC / BWT / FWT on a hand-built accuracy matrix, and their bootstrap intervals from per-case
scores."""

import pytest

from cift.evaluate.continual import continual_intervals, continual_metrics


def test_acc_bwt_fwt_by_hand():
    R = [
        [0.1, 0.2, 0.0],  # base
        [0.6, 0.3, 0.1],  # after batch 1
        [0.5, 0.7, 0.2],  # after batch 2
        [0.4, 0.6, 0.8],  # after batch 3
    ]
    m = continual_metrics(R)
    assert m["ACC"] == pytest.approx((0.4 + 0.6 + 0.8) / 3)
    assert m["BWT"] == pytest.approx(((0.4 - 0.6) + (0.6 - 0.7)) / 2)
    assert m["FWT"] == pytest.approx(((0.3 - 0.2) + (0.2 - 0.0)) / 2)


def test_one_batch_has_no_transfer_terms_and_bad_shapes_raise():
    assert continual_metrics([[0.0], [0.5]]) == {"ACC": 0.5, "BWT": None, "FWT": None}
    with pytest.raises(ValueError):
        continual_metrics([[0.1, 0.2], [0.3]])
    with pytest.raises(ValueError):
        continual_metrics([[0.1]])


def _cases(hits: list[int]) -> dict[str, float]:
    return {f"c{i}": float(h) for i, h in enumerate(hits)}


def test_intervals_hold_the_estimates_and_collapse_when_every_case_agrees():
    # 2 batches of 40 cases; rows: base, after b1, after b2
    base = [_cases([0] * 40), _cases([0] * 40)]
    after1 = [_cases([1] * 30 + [0] * 10), _cases([0] * 36 + [1] * 4)]
    after2 = [_cases([1] * 24 + [0] * 16), _cases([1] * 32 + [0] * 8)]
    scores = [base, after1, after2]
    R = [[sum(c.values()) / len(c) for c in row] for row in scores]
    point = continual_metrics(R)
    ci = continual_intervals(scores, n_boot=2000, seed=0)
    for key in ("ACC", "BWT", "FWT"):
        lo, hi = ci[f"{key}_ci"]
        assert lo <= point[key] <= hi and lo < hi
    assert ci["BWT_ci"][1] < 0  # 6 of 30 cases forgotten by every resample's count
    assert continual_intervals(scores, n_boot=500, seed=1) != ci
    assert continual_intervals(scores, n_boot=2000, seed=0) == ci  # seeded
    flat = [[_cases([1] * 5)], [_cases([1] * 5)]]
    assert continual_intervals(flat) == {"ACC_ci": [1.0, 1.0], "BWT_ci": None, "FWT_ci": None}
