"""Known selections: a sample is known when the model ranks its gold condition first right after
its chat prompt + "Diagnosis: " (tiny random model against a naive per-candidate reference), and
the paired static-vs-dynamic comparison with its interval, exact test and verdict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest

from cift.data.sample import student_messages
from cift.evaluate.answers import Version
from cift.evaluate.known import known_rows, union_of_selections
from cift.evaluate.ranked import RankCache, encode_case, naive_loglikelihoods
from cift.kb.loader import load_kb
from cift.models.loading import ModelSpec
from cift.report.known import (
    known_ablation,
    known_claim,
    known_counts,
    paired_comparison,
    paired_units,
    read_known,
)

CANDIDATES = ["Influenza", "Common cold", "COVID-19", "Otitis media", "Otitis externa"]
SYSTEM = "You are a careful doctor."


@pytest.fixture(scope="module")
def tiny():
    loaded = ModelSpec(name="tiny", source="tiny_random", dtype="float32").load()
    return loaded.model, loaded.tokenizer


def case(i: int, condition: str | None) -> dict:
    meta = {"condition": condition} if condition else {}
    return {"id": f"s{i}", "instruction": "What is it?", "input": f"fever {i} " * i, "meta": meta}


def naive_top(model, tok, sample: dict) -> str:
    """The reference: the candidate with the highest full-forward log-likelihood after the
    chat-templated prompt followed directly by "Diagnosis: "."""
    prompt = tok.apply_chat_template(
        student_messages(sample, SYSTEM), tokenize=False, add_generation_prompt=True
    )
    scores = naive_loglikelihoods(model, encode_case(tok, prompt + "Diagnosis: ", CANDIDATES))
    return CANDIDATES[int(np.argmax(scores))]


def test_known_means_the_gold_ranked_first_after_the_prompt(tiny, tmp_path: Path):
    model, tok = tiny
    kb = load_kb().subset(CANDIDATES)
    probes = [case(i, None) for i in range(1, 7)]
    tops = [naive_top(model, tok, s) for s in probes]
    # half the samples get the model's own top condition as gold (known), half another one
    samples = [
        case(i, top if i % 2 else next(c for c in CANDIDATES if c != top))
        for i, top in zip(range(1, 7), tops, strict=True)
    ]
    samples.append(case(7, None))  # no gold: not counted
    samples.append(case(8, "Not a condition of this KB"))
    loads = []

    def load(version):
        loads.append(version.name)
        return model, tok

    version = Version("main/b1", None, "base-test")
    cache = RankCache(tmp_path)
    rows, stats = known_rows(load, version, samples, kb, SYSTEM, cache=cache, max_tokens=64)
    assert [r["id"] for r in rows] == [s["id"] for s in samples]
    assert [r["known"] for r in rows] == [True, False, True, False, True, False, None, None]
    assert [r["top"] for r in rows[:6]] == tops
    assert all(r["rank"] > 1 for r in rows[:6] if not r["known"])
    assert stats["ranked"] == 6 and stats["cached"] == 0 and loads == ["main/b1"]
    # scored again: the cache answers and no model is loaded
    again, stats = known_rows(load, version, samples, kb, SYSTEM, cache=cache)
    assert again == rows and stats == {"ranked": 0, "cached": 6, "seconds": 0.0}
    assert loads == ["main/b1"]
    # another version's weights are another key: scored afresh
    _, stats = known_rows(load, Version("main/b2", "x", "lora-other"), samples, kb, SYSTEM)
    assert stats["ranked"] == 6 and loads == ["main/b1", "main/b2"]


def test_union_of_selections_keeps_each_sample_once_and_refuses_different_content():
    a, b, c = case(1, "Influenza"), case(2, "COVID-19"), case(3, "Common cold")
    where = {"dynamic": "dyn.jsonl", "static": "static.jsonl"}
    union = union_of_selections({"dynamic": [a, b], "static": [b, c]}, where)
    assert [(u["sample"]["id"], u["selected_by"]) for u in union] == [
        ("s1", ["dynamic"]),
        ("s2", ["dynamic", "static"]),
        ("s3", ["static"]),
    ]
    with pytest.raises(ValueError, match=r"static\.jsonl: sample 's2' differs .* dyn\.jsonl"):
        union_of_selections({"dynamic": [b], "static": [{**b, "input": "other"}]}, where)


def ids(*numbers: int) -> list[dict]:
    return [{"id": f"s{n}"} for n in numbers]


def test_paired_comparison_on_a_constructed_batch():
    known = {f"s{n}": n < 10 for n in range(20)} | {"s20": None}  # s0..s9 known
    static, dynamic = ids(0, 1, 2, 3, 4, 10, 11, 12, 20), ids(0, 1, 13, 14, 15, 16, 17, 18, 20)
    assert known_counts(static, known, "k") == {
        "known_selected": 5,
        "no_gold": 1,
        "known_share": 5 / 8,
    }
    units = paired_units(static, dynamic, known)
    assert units.shape == (14, 3)  # the union with a gold condition
    got = paired_comparison([units], n_boot=2000, seed=1)
    assert got["diff"] == pytest.approx(2 / 8 - 5 / 8)
    assert (got["dynamic_only"], got["static_only"]) == (0, 3)
    assert got["p_value"] == pytest.approx(binomtest(0, 3).pvalue)
    lo, hi = got["diff_ci"]
    assert lo <= got["diff"] <= hi < 0.2
    with pytest.raises(ValueError, match=r"known\.jsonl: no row for selected samples \['s99'\]"):
        known_counts(ids(99), known, "runs/main/b2/known.jsonl")
    assert known_counts(ids(1), None, "x")["known_selected"] is None  # not measured


def test_the_verdict_follows_the_interval():
    many = np.array([[1, 1, 0]] * 30 + [[0, 0, 1]] * 30 + [[0, 1, 1]] * 10, dtype=float)
    fewer = paired_comparison([many], n_boot=500, seed=0)
    assert fewer["diff_ci"][1] < 0 and known_claim(fewer)["verdict"] == "supported"
    more = paired_comparison([many[:, [0, 2, 1]]], n_boot=500, seed=0)
    assert more["diff_ci"][0] > 0 and known_claim(more)["verdict"] == "not supported"
    mixed = np.array([[1, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 0]] * 3, dtype=float)
    claim = known_claim(paired_comparison([mixed], n_boot=500, seed=0))
    assert claim["verdict"] == "inconclusive" and claim["ci"][0] < 0 < claim["ci"][1]
    assert set(claim) == {"claim", "estimate", "ci", "verdict"}
    assert known_claim(paired_comparison([], n_boot=10))["verdict"] == "inconclusive"
    # strata: each batch resampled within itself, the estimate pooled over both
    both = paired_comparison([many, mixed], n_boot=500, seed=0)
    assert both["n"] == len(many) + len(mixed)
    assert both["dynamic_only"] == fewer["dynamic_only"] + 3


def test_known_ablation_per_batch_and_in_total(tmp_path: Path):
    path = tmp_path / "known.jsonl"
    path.write_text(
        '{"id": "s0", "known": true}\n{"id": "s1", "known": false}\n'
        '{"id": "s2", "known": true}\n{"id": "s3", "known": null}\n'
    )
    known = read_known(path)
    assert known == {"s0": True, "s1": False, "s2": True, "s3": None}
    assert read_known(tmp_path / "missing.jsonl") is None
    (tmp_path / "bad.jsonl").write_text('{"id": "s0", "known": true}\n{"id": "s1"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        read_known(tmp_path / "bad.jsonl")
    selections = {
        "static": {"b1": ids(9), "b2": ids(0, 2, 3), "b3": ids(5)},
        "dynamic": {"b1": ids(9), "b2": ids(1, 2, 3), "b3": ids(5)},
    }
    where = {b: f"{b}/known.jsonl" for b in ("b1", "b2", "b3")}
    out = known_ablation(
        ["b1", "b2", "b3"], selections, {"b1": None, "b2": known, "b3": None}, where, n_boot=200
    )
    assert [r["known_selected"] for r in out["per_batch"]["static"]] == [2, None]
    assert [r["known_selected"] for r in out["per_batch"]["dynamic"]] == [1, None]
    assert out["totals"]["static"] == {"known_selected": 2, "no_gold": 1, "known_share": 1.0}
    assert out["totals"]["dynamic"] == {"known_selected": 1, "no_gold": 1, "known_share": 0.5}
    comparison = out["comparison"]
    assert [r["batch"] for r in comparison["per_batch"]] == ["b2", "b3"]
    assert comparison["per_batch"][1]["diff"] is None  # b3 not measured
    assert comparison["total"]["diff"] == pytest.approx(-0.5)
    assert (comparison["total"]["dynamic_only"], comparison["total"]["static_only"]) == (0, 1)
    assert comparison["claim"]["estimate"] == pytest.approx(-0.5)
