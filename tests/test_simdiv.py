"""Sim-Div keeps in-domain items, drops exact duplicates, and never keeps a K-shot example."""

from __future__ import annotations

import numpy as np
import pytest

from cift.filters.base import FilterContext
from cift.filters.pipeline import build_steps, run_filter
from cift.filters.simdiv import SimDivFilter

TOPICS = ["cough", "fever", "rash", "stock", "poem"]


def topic_embed(texts: list[str]) -> np.ndarray:
    """cough/fever/rash are one medical direction with small offsets; stock/poem orthogonal."""
    out = []
    for t in texts:
        word = t.split()[0]
        v = np.zeros(4, dtype=np.float32)
        if word in ("cough", "fever", "rash"):
            v[0], v[1] = 1.0, 0.1 * ("cough", "fever", "rash").index(word)
        else:
            v[2 if word == "stock" else 3] = 1.0
        out.append(v / np.linalg.norm(v))
    return np.stack(out)


def sample(i: int, text: str) -> dict:
    return {"id": f"s{i}", "instruction": text, "input": "", "output": "x"}


def test_in_domain_kept_duplicates_and_off_topic_dropped():
    kshot = [sample(0, "cough case a"), sample(1, "fever case b")]
    pool = [
        sample(2, "rash case c"),
        sample(3, "cough case a"),  # exactly a K-shot prompt: in domain
        sample(4, "cough case a"),  # ... and its exact duplicate: dropped as near_duplicate
        sample(5, "stock market question"),
        sample(6, "poem about snow"),
    ]
    step = SimDivFilter(k=2, top_k=3, embed=topic_embed)
    step.kshot = lambda samples, seed: (kshot, set())  # a user's K-shot file
    stats = {s["id"]: {"flags": []} for s in pool}
    dropped = step.apply(pool, stats, FilterContext(seed=1, n_in=len(pool)))
    assert dropped["s4"] == "near_duplicate"
    assert dropped["s5"] == dropped["s6"] == "not_selected"
    assert "s3" not in dropped  # most similar to the K-shot set, kept first
    assert stats["s3"]["kshot_similarity"] == pytest.approx(1.0)


def test_default_kshot_set_comes_out_of_the_pool_with_a_reason():
    samples = [sample(i, f"{TOPICS[i % 3]} case {i}") for i in range(9)]
    cfg = {"steps": ["simdiv"], "simdiv": {"k": 2, "fraction": 0.5}}
    steps = build_steps(cfg)
    steps[0].embed = topic_embed
    kept, rejected, _, _ = run_filter(samples, steps, FilterContext(seed=3))
    reasons = [r["filter"]["reason"] for r in rejected]
    assert reasons.count("kshot_example") == 2
    assert len(kept) + len(rejected) == 9 and len(kept) <= 5
    kshot_ids = {r["id"] for r in rejected if r["filter"]["reason"] == "kshot_example"}
    assert not kshot_ids & {s["id"] for s in kept}
    again = run_filter(samples, steps, FilterContext(seed=3))[1]
    assert kshot_ids == {r["id"] for r in again if r["filter"]["reason"] == "kshot_example"}


def test_bad_k_is_a_config_error():
    with pytest.raises(ValueError, match=r"filter\.simdiv\.k"):
        SimDivFilter(k=0)
