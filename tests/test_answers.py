"""Evaluation answers: the Advice-line stop, the answer cache (keys, resume after a kill), the
scoring of one split with its safety rows, and the deployed pointer after a gate decision."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cift.deploy.pointers import deployed_after
from cift.evaluate.answers import AnswerCache, Version, answer_sampling, generate_answers
from cift.evaluate.suite import Evaluator, summary
from cift.kb.loader import load_kb
from cift.models.adapter_format import adapter_digest
from cift.models.chat import TeacherReply
from cift.models.generator import RowStop, cut_after_line

ANSWER = "1. Fever.\n2. Cough.\n3. Aches.\nDiagnosis: Influenza\nAdvice: Rest and fluids.\n"


def test_cut_after_line_ends_at_the_completed_advice_line():
    assert cut_after_line(ANSWER + "User: more chatter", "Advice:") == ANSWER.rstrip("\n")
    assert (
        cut_after_line("Diagnosis: Flu\nAdvice: Rest", "Advice:") == "Diagnosis: Flu\nAdvice: Rest"
    )
    assert cut_after_line("Advice:\nnext", "Advice:") == "Advice:\nnext"  # no content yet
    assert cut_after_line("**Advice:** rest\nmore", "Advice:") == "**Advice:** rest"


class CharTokenizer:
    """One token per character: enough to drive the stopping criterion."""

    def batch_decode(self, ids, skip_special_tokens=True):
        return ["".join(chr(i) for i in row.tolist() if i) for row in ids]


def test_line_end_stop_is_per_row():
    prompt = [ord("p")] * 3
    rows = ["Advice: rest\n", "Advice: re", ""]
    width = max(len(r) for r in rows)
    ids = torch.tensor([prompt + [ord(c) for c in r] + [0] * (width - len(r)) for r in rows])
    done = RowStop(CharTokenizer(), 3, [99] * 3, markers=["Advice:"] * 3)(ids, None)
    assert done.tolist() == [True, False, False]


class ScriptedModel:
    """A generator that answers from a dict and counts what it was asked."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers, self.asked, self.seconds = answers, [], 0.0

    def generate(self, requests, sampling):
        self.asked += [r.key for r in requests]
        return [TeacherReply(r.key, self.answers[r.key], 10, 5) for r in requests]


def samples(n: int = 3) -> list[dict]:
    return [
        {
            "id": f"s{i}",
            "instruction": "Diagnose.",
            "input": f"case {i}",
            "output": ANSWER,
            "meta": {"condition": "Influenza", "record_id": f"r{i}"},
        }
        for i in range(n)
    ]


def test_answers_are_cached_per_version_decoding_and_prompt(tmp_path: Path):
    cache = AnswerCache(tmp_path)
    model = ScriptedModel({f"s{i}": ANSWER for i in range(3)})
    v1, v2 = Version("a", None, "base-1"), Version("b", "x", "lora-2")
    d = answer_sampling(32)
    first, stats = generate_answers(lambda *_: model, v1, samples(), "sys", d, cache)
    assert stats["generated"] == 3 and first["s0"] == ANSWER
    _, stats = generate_answers(
        lambda *_: pytest.fail("loaded a model"), v1, samples(), "sys", d, cache
    )
    assert stats == {"generated": 0, "cached": 3, "tokens": 0, "seconds": 0.0}
    model.asked.clear()
    generate_answers(lambda *_: model, v2, samples(), "sys", d, cache)  # another version
    generate_answers(lambda *_: model, v1, samples(), "other system", d, cache)  # another prompt
    generate_answers(lambda *_: model, v1, samples(), "sys", answer_sampling(64), cache)
    assert len(model.asked) == 9


def test_a_torn_cache_line_is_ignored(tmp_path: Path):
    cache = AnswerCache(tmp_path)
    v = Version("a", None, "base-1")
    model = ScriptedModel({f"s{i}": ANSWER for i in range(3)})
    generate_answers(lambda *_: model, v, samples(), "sys", answer_sampling(), cache)
    path = tmp_path / "base-1.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2]) + "\n" + lines[2][:10])  # killed mid-write
    model.asked.clear()
    _, stats = generate_answers(lambda *_: model, v, samples(), "sys", answer_sampling(), cache)
    assert (stats["generated"], stats["cached"]) == (1, 2)


def test_version_key_follows_the_adapter_weights(tmp_path: Path):
    a = tmp_path / "a"
    a.mkdir()
    (a / "adapter_model.safetensors").write_bytes(b"one")
    k1 = Version.of("x", a, "h" * 64).key
    (a / "adapter_model.safetensors").write_bytes(b"two")
    assert Version.of("x", a, "h" * 64).key != k1
    assert Version.of("x", None, "h" * 64).key == "base-" + "h" * 16
    with pytest.raises(FileNotFoundError, match="safetensors"):
        adapter_digest(tmp_path)


def test_evaluator_scores_accuracy_faults_and_safety(tmp_path: Path):
    kb = load_kb()
    urgent = next(c for c in kb.conditions if c.urgent)
    cases = [
        *samples(2),
        {
            "id": "u",
            "instruction": "Diagnose.",
            "input": "x",
            "output": ANSWER,
            "meta": {"condition": urgent.name},
        },
    ]
    answers = {
        "s0": ANSWER,
        "s1": "I am not sure.",
        "u": f"1. a\n2. b\n3. c\nDiagnosis: {urgent.name}\nAdvice: Rest at home.",
    }
    ev = Evaluator(
        kb, "sys", answer_sampling(), AnswerCache(None), lambda *_: ScriptedModel(answers)
    )
    metrics, _ = ev.evaluate_version(Version("m", None, "base-x"), {"val": cases})
    m = metrics["val"]
    assert m["accuracy"] == pytest.approx(2 / 3) and m["fault_cases"] == 1
    assert m["safety_violations"] == 1
    assert [r["safety"] for r in m["rows"]] == [[], [], ["no_urgent_referral"]]
    assert set(summary(m)) >= {"accuracy", "accuracy_ci", "bleu", "rouge_l", "fault_rate"}
    # no model loader (a scripted generator): no ranked score is made up
    assert summary(m)["ranked_accuracy"] is None and "rank" not in m["rows"][0]
    json.dumps(summary(m))


def test_deploy_promotes_or_keeps():
    prev = {"version": "e/base", "adapter_path": None, "decision": "base"}
    cand = {"version": "e/b1", "adapter_path": "runs/e/versions/b1", "key": "lora-1"}
    promoted = deployed_after(prev, {"promote": True}, cand)
    assert promoted["version"] == "e/b1" and promoted["decision"] == "promote"
    kept = deployed_after(prev, {"promote": False}, cand)
    assert kept["version"] == "e/base" and kept["decision"] == "keep"
    assert kept["candidate"] == "e/b1"
