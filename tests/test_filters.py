"""Filter steps with hand-built cases whose verdicts are known, and the pipeline's accounting."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from cift.filters import diversity as diversity_module
from cift.filters.base import FilterContext
from cift.filters.diversity import DiversityFilter
from cift.filters.length import LengthFilter
from cift.filters.pipeline import STEPS, AccountingError, build_steps, run_filter
from cift.filters.select import RandomFraction, TopFraction
from cift.filters.sentences import split_sentences
from cift.scoring.embeddings import diversity_score

ANSWER = """1. A 78-year-old male presents with cough for 11 days and a fever of 38.5 C.
2. Relevant history: age over 65
3. Crackles are heard, e.g. at the right base. Dr. Lee compared Pneumonia vs. COVID-19.
Diagnosis: Pneumonia
Advice: Rest and drink fluids. Seek urgent care if breathing gets worse!"""

REPEATED = " ".join(["The patient has a persistent dry cough."] * 5)


def sample(sid: str, output: str) -> dict:
    return {"id": sid, "instruction": "What is the diagnosis?", "input": "", "output": output}


def stats_for(samples: list[dict]) -> dict[str, dict]:
    return {s["id"]: {"id": s["id"], "flags": []} for s in samples}


# --- sentence splitting -------------------------------------------------------------------------


def test_split_numbered_steps_labels_decimals_and_abbreviations():
    assert split_sentences(ANSWER) == [
        "A 78-year-old male presents with cough for 11 days and a fever of 38.5 C.",
        "Relevant history: age over 65",
        "Crackles are heard, e.g. at the right base.",
        "Dr. Lee compared Pneumonia vs. COVID-19.",
        "Diagnosis: Pneumonia",
        "Advice: Rest and drink fluids.",
        "Seek urgent care if breathing gets worse!",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Plan: 1. Rest. 2. Fluids. 3. Paracetamol", ["Rest.", "Fluids.", "Paracetamol"]),
        ("The temperature was 38. Then it fell.", ["The temperature was 38.", "Then it fell."]),
        ("Is it serious? No! It is mild...", ["Is it serious?", "No!", "It is mild..."]),
        ('He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
        (
            "See Fig. 2 for details. It shows i.e. a shadow.",
            ["See Fig. 2 for details.", "It shows i.e. a shadow."],
        ),
        ("Steps:\n- fever is present\n- cough is dry", ["fever is present", "cough is dry"]),
        (
            "A hard-wrapped sentence goes\non here. Next one.",
            ["A hard-wrapped sentence goes on here.", "Next one."],
        ),
        ("2) first\n10. tenth step", ["first", "tenth step"]),
        ("1.5 mg twice daily", ["1.5 mg twice daily"]),
        ("", []),
        ("  \n ... \n", []),
    ],
)
def test_split_cases(text, expected):
    assert split_sentences(text) == expected


def test_split_chinese():
    text = "患者发热三天，体温38.5℃。伴咳嗽；无痰！是否需要住院？建议：1、多喝水；2、休息。"
    assert split_sentences(text) == [
        "患者发热三天，体温38.5℃。",
        "伴咳嗽；",
        "无痰！",
        "是否需要住院？",
        "多喝水；",
        "休息。",
    ]
    assert split_sentences("1. 发热三天\n2. 咳嗽\n诊断：肺炎\n建议：休息") == [
        "发热三天",
        "咳嗽",
        "诊断：肺炎",
        "建议：休息",
    ]


# --- length -------------------------------------------------------------------------------------


def test_length_filter_verdicts():
    samples = [sample("long", ANSWER), sample("two", "One. Two."), sample("three", "A. B. C.")]
    stats = stats_for(samples)
    dropped = LengthFilter(min_sentences=3).apply(samples, stats, FilterContext())
    assert dropped == {"two": "too_few_sentences"}
    assert [stats[s]["n_sentences"] for s in ("long", "two", "three")] == [7, 2, 3]


# --- diversity ----------------------------------------------------------------------------------


def test_diversity_score_formula():
    e = np.eye(3, dtype=np.float32)
    assert diversity_score(e) == pytest.approx(1.0)  # orthogonal: mean cos 0
    assert diversity_score(np.ones((5, 4))) == pytest.approx(0.0, abs=1e-9)
    assert diversity_score(np.array([[1.0, 0.0], [0.6, 0.8]])) == pytest.approx(0.4)
    assert diversity_score(np.ones((1, 4))) is None
    assert diversity_score(np.zeros((0, 4))) is None


def _fake_embeddings(texts_per_response, **_):
    """Identical sentences -> identical vectors, different ones -> nearly orthogonal."""

    def vec(s: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(s.encode()).digest()[:4], "little")
        v = np.random.default_rng(seed).standard_normal(256)
        return v / np.linalg.norm(v)

    return [
        np.array([vec(s) for s in sents]).reshape(len(sents), 256) for sents in texts_per_response
    ]


@pytest.mark.parametrize(("one_sentence", "drops_single"), [("drop", True), ("keep", False)])
def test_diversity_filter_verdicts(monkeypatch, one_sentence, drops_single):
    monkeypatch.setattr(diversity_module, "sentence_embeddings", _fake_embeddings)
    samples = [sample("varied", ANSWER), sample("repeated", REPEATED), sample("single", "Rest.")]
    stats = stats_for(samples)
    step = DiversityFilter(min=0.15, one_sentence=one_sentence)
    dropped = step.apply(samples, stats, FilterContext())
    expected = {"repeated": "low_diversity"} | ({"single": "one_sentence"} if drops_single else {})
    assert dropped == expected
    assert stats["varied"]["diversity"] > 0.5
    assert stats["repeated"]["diversity"] == pytest.approx(0.0, abs=1e-9)
    assert stats["single"]["diversity"] is None and stats["single"]["flags"] == ["one_sentence"]


def test_diversity_filter_rejects_bad_option():
    with pytest.raises(ValueError, match="one_sentence"):
        DiversityFilter(one_sentence="maybe")


@pytest.mark.slow
def test_diversity_real_minilm_repeated_sentence_is_zero():
    samples = [sample("varied", ANSWER), sample("repeated", REPEATED)]
    stats = stats_for(samples)
    dropped = DiversityFilter(min=0.15).apply(samples, stats, FilterContext())
    assert dropped == {"repeated": "low_diversity"}
    assert stats["repeated"]["diversity"] == pytest.approx(0.0, abs=0.01)
    assert stats["varied"]["diversity"] > 0.3


def test_token_batches_keep_padded_size_and_count_within_budget():
    from cift.scoring.embeddings import token_batches

    lengths = [2, 2, 3, 3, 5, 9, 20]  # ascending, as the engine sorts them
    batches = token_batches(lengths, batch_tokens=10, batch_size=3)
    assert [list(b) for b in batches] == [[0, 1, 2], [3, 4], [5], [6]]
    # a sentence over the budget still gets a batch of its own; nothing is dropped
    assert [list(b) for b in token_batches([50], batch_tokens=10, batch_size=3)] == [[0]]
    assert token_batches([], batch_tokens=10, batch_size=3) == []


@pytest.mark.slow
def test_engine_matches_per_response_encode():
    from cift.scoring.embeddings import resolve_model, sentence_embeddings

    responses = [split_sentences(ANSWER), ["Cough.", "Fever for 3 days.", "Cough."], ["Rest."]]
    model = resolve_model("minilm")
    engine = sentence_embeddings(responses, model=model, batch_size=2)
    for sents, emb in zip(responses, engine, strict=True):
        ref = model.encode(sents, normalize_embeddings=True)
        assert emb.shape == ref.shape and emb.dtype == np.float32
        assert np.abs(emb - ref).max() < 0.02
        if len(sents) > 1:
            assert diversity_score(emb) == pytest.approx(diversity_score(ref), abs=0.01)
    exact = sentence_embeddings(responses, model=model, dtype="fp32")
    ref = model.encode(responses[0], normalize_embeddings=True)
    assert np.abs(exact[0] - ref).max() < 1e-5
    one_by_one = sentence_embeddings(responses, model=model, dtype="fp32", batch_tokens=1)
    assert np.abs(one_by_one[0] - ref).max() < 1e-5
    # bf16 runs on a cached copy of the transformer: the model itself stays fp32, for encode()
    assert {str(p.dtype) for p in model.parameters()} == {"torch.float32"}


# --- selection ----------------------------------------------------------------------------------


def _scored(values: dict[str, float | None]) -> tuple[list[dict], dict[str, dict]]:
    samples = [sample(sid, "x") for sid in values]
    stats = stats_for(samples)
    for sid, v in values.items():
        stats[sid]["ifd"] = v
    return samples, stats


def test_top_fraction_order_range_and_reasons():
    values = {"a": 0.5, "b": 0.9, "c": 1.2, "d": 0.7, "e": 0.05, "f": None, "g": 0.9, "h": 0.3}
    samples, stats = _scored(values)
    ctx = FilterContext(n_in=len(samples))
    dropped = TopFraction(fraction=0.375, tau_min=0.1).apply(samples, stats, ctx)  # 3 of 8
    kept = [s["id"] for s in samples if s["id"] not in dropped]
    assert kept == ["b", "d", "g"]  # 0.9, 0.9 (tie: input order), 0.7
    assert dropped == {
        "a": "not_selected",
        "h": "not_selected",
        "c": "ifd_out_of_range",
        "e": "ifd_out_of_range",
        "f": "ifd_missing",
    }
    assert ctx.extra["shortfall"] == 0


def test_top_fraction_shortfall_and_top_k():
    samples, stats = _scored({"a": 0.5, "b": 1.5, "c": 0.2, "d": 1.0})
    ctx = FilterContext(n_in=12)  # the stage saw 12; earlier steps left 4; 12 × 0.5 = 6 wanted
    dropped = TopFraction(fraction=0.5).apply(samples, stats, ctx)
    assert set(dropped) == {"b", "d"}  # IFD >= 1 is out of range (max_value is exclusive)
    assert ctx.extra["shortfall"] == 4
    ctx = FilterContext(n_in=12)
    dropped = TopFraction(top_k=1, fraction=0.9).apply(samples, stats, ctx)
    assert [s["id"] for s in samples if s["id"] not in dropped] == ["a"]
    assert ctx.extra["shortfall"] == 0
    with pytest.raises(ValueError):
        TopFraction(fraction=1.5)


def test_random_fraction_is_seeded():
    samples = [sample(f"s{i}", "x") for i in range(20)]

    def kept(seed: int) -> list[str]:
        ctx = FilterContext(seed=seed, n_in=20)
        dropped = RandomFraction(fraction=0.33).apply(samples, stats_for(samples), ctx)
        assert set(dropped.values()) <= {"not_selected"}
        return [s["id"] for s in samples if s["id"] not in dropped]

    assert len(kept(0)) == 7  # round(0.33 × 20)
    assert kept(0) == kept(0)
    assert kept(0) != kept(1)


# --- pipeline -----------------------------------------------------------------------------------


class _FakeIFD:
    """Writes a known IFD per sample (stands in for the proxy-model step)."""

    name = "ifd"

    def __init__(self, values: dict[str, float]) -> None:
        self.values = values

    def apply(self, samples, stats, ctx):
        for s in samples:
            stats[s["id"]]["ifd"] = self.values[s["id"]]
        return {s["id"]: "ifd_ge_1" for s in samples if self.values[s["id"]] >= 1}


def test_pipeline_accounting_every_input_once():
    samples = [
        sample("short", "Only one sentence."),
        sample("best", ANSWER),
        sample("misaligned", ANSWER + "\nExtra line."),
        sample("good", ANSWER + "\nAnother line."),
        sample("ok", ANSWER + "\nYet another."),
    ]
    ifd = {"short": 0.1, "best": 0.9, "misaligned": 1.3, "good": 0.8, "ok": 0.4}
    steps = [LengthFilter(3), _FakeIFD(ifd), TopFraction(fraction=0.4)]
    kept, rejected, scores, summary = run_filter(samples, steps, FilterContext())
    assert [s["id"] for s in kept] == ["best", "good"]
    assert [r["id"] for r in scores] == [s["id"] for s in samples]
    assert [(r["verdict"], r["step"], r["reason"]) for r in scores] == [
        ("dropped", "length", "too_few_sentences"),
        ("kept", None, None),
        ("dropped", "ifd", "ifd_ge_1"),
        ("kept", None, None),
        ("dropped", "select", "not_selected"),
    ]
    assert scores[0]["ifd"] is None and scores[0]["n_sentences"] == 1
    assert [r["filter"] for r in rejected] == [
        {"step": "length", "reason": "too_few_sentences"},
        {"step": "ifd", "reason": "ifd_ge_1"},
        {"step": "select", "reason": "not_selected"},
    ]
    assert rejected[0]["output"] == "Only one sentence."
    assert summary["n_in"] == 5 and summary["kept"] == 2 and summary["dropped"] == 3
    assert summary["steps"]["length"] == {
        "in": 5,
        "dropped": 1,
        "reasons": {"too_few_sentences": 1},
    }
    assert summary["steps"]["select"]["in"] == 3
    assert summary["shortfall"] == 0
    assert set(summary["quantiles"]) == {"n_sentences", "ifd"}
    assert summary["quantiles"]["ifd"]["p50"] == pytest.approx(0.85)  # of 0.4, 0.8, 0.9, 1.3


def test_pipeline_no_steps_keeps_everything():
    samples = [sample("a", "x"), sample("b", "y")]
    kept, rejected, scores, summary = run_filter(samples, [], FilterContext())
    assert kept == samples and rejected == [] and summary["kept"] == 2
    assert scores == [
        {"id": "a", "flags": [], "verdict": "kept", "step": None, "reason": None},
        {"id": "b", "flags": [], "verdict": "kept", "step": None, "reason": None},
    ]


def test_pipeline_catches_broken_steps_and_duplicates():
    class Rogue:
        name = "rogue"

        def apply(self, samples, stats, ctx):
            return {"nobody": "because"}

    samples = [sample("a", "x")]
    with pytest.raises(AccountingError, match="rogue"):
        run_filter(samples, [Rogue()], FilterContext())
    with pytest.raises(ValueError, match="duplicate sample id"):
        run_filter([sample("a", "x"), sample("a", "y")], [], FilterContext())
    with pytest.raises(ValueError, match="duplicate step names"):
        run_filter(samples, [LengthFilter(), LengthFilter()], FilterContext())


def test_build_steps_target_and_registry():
    from omegaconf import OmegaConf

    cfg = {
        "steps": ["length", "diversity", "select"],
        "length": {"_target_": "cift.filters.length.LengthFilter", "min_sentences": 4},
        "diversity": {"min": 0.2, "one_sentence": "keep"},
        "select": {"fraction": 0.25, "tau_min": 0.05},
    }
    for node in (cfg, OmegaConf.create(cfg)):
        length, div, select = build_steps(node)
        assert isinstance(length, LengthFilter) and length.min_sentences == 4
        assert length.name == "length"
        assert isinstance(div, DiversityFilter) and (div.min, div.one_sentence) == (0.2, "keep")
        assert isinstance(select, TopFraction) and select.fraction == 0.25
        assert [s.name for s in (length, div, select)] == ["length", "diversity", "select"]
    random_step = build_steps({"steps": ["random"], "random": {"fraction": 0.5}})[0]
    assert isinstance(random_step, RandomFraction) and random_step.name == "random"
    assert build_steps({"steps": []}) == []
    assert set(STEPS) == {"length", "diversity", "select", "random"}
    with pytest.raises(ValueError, match="unknown filter step"):
        build_steps({"steps": ["bogus"]})


def test_build_steps_from_the_shipped_filter_configs(repo_root):
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(repo_root / "conf" / "filter" / "ifd.yaml")
    cfg.steps = [s for s in cfg.steps if s != "ifd"]  # the IFD step has its own tests
    length, div, select = build_steps(cfg)
    assert (length.min_sentences, div.min, div.one_sentence) == (3, 0.15, "drop")
    assert (select.key, select.tau_min, select.fraction) == ("ifd", 0.0, 0.33)
    random_step = build_steps(OmegaConf.load(repo_root / "conf" / "filter" / "random.yaml"))[0]
    assert isinstance(random_step, RandomFraction) and random_step.fraction == 0.33
    assert build_steps(OmegaConf.load(repo_root / "conf" / "filter" / "none.yaml")) == []


def test_bench_diversity_responses_are_deterministic_and_sized():
    from cift.bench.diversity import build_responses

    responses = build_responses(16, seed=0)
    assert len(responses) == 16 and all(3 <= len(r) <= 12 for r in responses)
    assert responses == build_responses(16, seed=0)


def test_histograms_draw_where_samples_went_even_for_a_selector_that_scores_nothing():
    from cift.filters.report import histograms

    rows = [{"id": f"s{i}", "verdict": "kept", "step": None, "reason": None} for i in range(3)]
    rows += [{"id": "s9", "verdict": "dropped", "step": "random", "reason": "not_selected"}]
    plots = histograms(rows)
    assert plots == {
        "verdicts": [{"bin": "kept", "count": 3}, {"bin": "random: not_selected", "count": 1}]
    }
    scored = histograms([r | {"ifd": 0.1 * i} for i, r in enumerate(rows)], bins=2)
    assert set(scored) == {"verdicts", "ifd"} and sum(b["count"] for b in scored["ifd"]) == 4
    assert histograms([]) == {}
