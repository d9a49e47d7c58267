"""ACC / BWT / FWT on a hand-built accuracy matrix."""

import pytest

from cift.evaluate.continual import continual_metrics


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
