"""The ranked diagnosis score: the answer prefix, the batched scorer with a shared prefix cache
against a naive per-candidate log-likelihood (tiny random model), ranks and their metrics, the
rank cache, and the Evaluator carrying both scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cift.evaluate.answers import AnswerCache, Version, answer_sampling
from cift.evaluate.ranked import (
    RankCache,
    answer_prefix,
    encode_case,
    gold_rank,
    loglikelihoods,
    naive_loglikelihoods,
    rank_cases,
    ranked_metrics,
    split_pair,
)
from cift.evaluate.suite import Evaluator, summary
from cift.kb.loader import load_kb
from cift.models.chat import TeacherReply
from cift.models.loading import ModelSpec

# "Otitis media" / "Otitis externa" share leading tokens: the trie shares their nodes
CANDIDATES = [
    "Influenza",
    "Common cold",
    "COVID-19",
    "Gastroesophageal reflux disease",
    "Otitis media",
    "Otitis externa",
]


@pytest.fixture(scope="module")
def tiny():
    loaded = ModelSpec(name="tiny", source="tiny_random", dtype="float32").load()
    return loaded.model, loaded.tokenizer


def test_answer_prefix_cuts_before_the_first_diagnosis_line():
    text = "1. Fever.\n2. Cough.\n**Diagnosis:** Influenza\nAdvice: rest\nDiagnosis: cold"
    assert answer_prefix(text) == "1. Fever.\n2. Cough.\nDiagnosis: "
    assert answer_prefix("1. a\nFinal diagnosis - flu") == "1. a\nDiagnosis: "
    assert answer_prefix("no diagnosis line here  \n") == "no diagnosis line here\nDiagnosis: "
    assert answer_prefix("") == answer_prefix(None) == "Diagnosis: "
    # a word inside a sentence is not a Diagnosis line
    assert answer_prefix("The diagnosis: unclear so far.\nok") != "Diagnosis: "
    assert answer_prefix("My diagnosis: flu") == "My diagnosis: flu\nDiagnosis: "


def test_split_pair_moves_the_trailing_space_to_the_continuation():
    assert split_pair("Diagnosis: ", "Flu\n") == ("Diagnosis:", " Flu\n")
    assert split_pair("Diagnosis:", "Flu\n") == ("Diagnosis:", "Flu\n")


def test_batched_shared_prefix_equals_naive_per_candidate(tiny):
    model, tok = tiny
    prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": "fever " * k}], tokenize=False, add_generation_prompt=True
        )
        for k in (1, 7, 30)
    ]
    answers = ["1. Fever.\nDiagnosis: Influenza\nAdvice: rest", None, "some text"]
    cases = [
        encode_case(tok, p + answer_prefix(a), CANDIDATES)
        for p, a in zip(prompts, answers, strict=True)
    ]
    assert all(c.continuations[0][-1] == tok("\n")["input_ids"][-1] for c in cases)  # line end
    assert cases[0].continuations[4][0] == cases[0].continuations[5][0]  # a shared first token
    naive = np.array([naive_loglikelihoods(model, c) for c in cases])
    for budget in (10, 100_000):  # one case per batch, and all cases in one batch
        got = np.array(loglikelihoods(model, cases, max_tokens=budget))
        np.testing.assert_allclose(got, naive, atol=1e-4)
    # cases differ: the prefix is not shared across cases, only across candidates
    assert not np.allclose(naive[0], naive[2])
    assert np.array(rank_cases(model, tok, prompts, answers, CANDIDATES)) == pytest.approx(
        naive, abs=1e-4
    )


def test_rank_cases_rejects_bad_input(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="prompts"):
        rank_cases(model, tok, ["a"], [], CANDIDATES)
    with pytest.raises(ValueError, match="candidate"):
        rank_cases(model, tok, ["a"], ["b"], [])


def test_gold_rank_and_ranked_metrics_on_a_constructed_example():
    cands = ["A", "B", "C", "D"]
    assert gold_rank([-1.0, -2.0, -3.0, -4.0], cands, "A") == 1
    assert gold_rank([-1.0, -2.0, -3.0, -4.0], cands, "C") == 3
    assert gold_rank([-1.0, -1.0, -3.0, -4.0], cands, "B") == 2  # a tie counts against gold
    m = ranked_metrics([1, 2, 3, 4, None], n_boot=500, seed=0)
    assert m["n_ranked"] == 4 and m["n_unranked"] == 1
    assert m["ranked_accuracy"] == pytest.approx(0.25)
    assert m["top3"] == pytest.approx(0.75)
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    for key in ("ranked_accuracy", "top3", "mrr"):
        lo, hi = m[f"{key}_ci"]
        assert 0.0 <= lo <= m[key] <= hi <= 1.0
    empty = ranked_metrics([None])
    assert empty["ranked_accuracy"] is None and empty["mrr_ci"] is None


def test_rank_cache_round_trip_and_torn_line(tmp_path: Path):
    cache = RankCache(tmp_path)
    cache.add("v", {"k1": [-1.0, -2.0]})
    with (tmp_path / "v.ranked.jsonl").open("a") as fh:
        fh.write('{"key": "k2", "sco')
    assert cache.load("v") == {"k1": [-1.0, -2.0]}
    assert RankCache(None).load("v") == {}


class Scripted:
    def __init__(self, answers: dict[str, str]) -> None:
        self.answers, self.seconds = answers, 0.0

    def generate(self, requests, sampling):
        return [TeacherReply(r.key, self.answers[r.key], 10, 5) for r in requests]


def test_evaluator_carries_ranked_scores_for_answers_without_a_diagnosis(tiny, tmp_path: Path):
    kb = load_kb().subset(CANDIDATES)
    model, tok = tiny
    samples = [
        {
            "id": f"s{i}",
            "instruction": "Diagnose.",
            "input": f"case {i}: fever",
            "output": "",
            "meta": {"condition": c},
        }
        for i, c in enumerate(CANDIDATES)
    ]
    answers = {s["id"]: "1. Fever.\n2. Cough." for s in samples}  # no Diagnosis line at all
    loads = []

    def load(version):
        loads.append(version.name)
        return model, tok

    ev = Evaluator(
        kb,
        "sys",
        answer_sampling(),
        AnswerCache(tmp_path),
        lambda *_: Scripted(answers),
        load_model=load,
        rank_cache=RankCache(tmp_path),
    )
    version = Version("m", None, "base-x")
    metrics, stats = ev.evaluate_version(version, {"val": samples})
    m = metrics["val"]
    assert m["accuracy"] == 0.0 and m["fault_rate"] == 1.0  # the format score says nothing
    assert m["n_ranked"] == len(CANDIDATES) and 0.0 <= m["ranked_accuracy"] <= 1.0
    assert m["mrr"] >= 1 / len(CANDIDATES) and m["top3"] >= m["ranked_accuracy"]
    ranks = [r["rank"] for r in m["rows"]]
    assert set(ranks) <= set(range(1, len(CANDIDATES) + 1)) and all(
        r["ranked_pred"] in CANDIDATES for r in m["rows"]
    )
    assert stats["ranking"]["ranked"] == len(CANDIDATES)
    assert {"ranked_accuracy", "ranked_accuracy_ci", "top3", "mrr", "fault_rate"} <= set(summary(m))
    # scored again: the rank cache answers, no model is loaded
    again, stats = ev.evaluate_version(version, {"val": samples})
    assert loads == ["m"]
    assert stats["ranking"] == {"ranked": 0, "cached": len(CANDIDATES), "seconds": 0.0}
    assert [r["rank"] for r in again["val"]["rows"]] == ranks
