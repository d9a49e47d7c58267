"""Dial-insight quality metrics on a hand-built set whose numbers are worked out below."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cift.data.quality import RuleGrader, components, quality_report, tokenizer_counter
from cift.kb.loader import load_kb
from tests.conftest import ROOT, run_env

GOOD = "1. Fever.\n2. Aching all over.\n3. Sudden onset.\nDiagnosis: Influenza\nAdvice: Rest."
WRONG = "1. Fever.\n2. Aching all over.\n3. Sudden onset.\nDiagnosis: Pneumonia\nAdvice: Rest."
BROKEN = "1. Fever.\nDiagnosis: Pneumonia"  # too few steps, no advice, wrong: low


def words(texts: list[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def by_first_word(texts: list[str]) -> np.ndarray:
    vocab = sorted({t.split()[0] for t in texts})
    out = np.zeros((len(texts), len(vocab)), dtype=np.float32)
    for i, t in enumerate(texts):
        out[i, vocab.index(t.split()[0])] = 1
    return out


def sample(instruction: str, context: str, output: str, condition: str | None) -> dict:
    meta = {"condition": condition} if condition else {}
    return {"instruction": instruction, "input": context, "output": output, "meta": meta}


SET = [
    sample("alpha one two", "a b c", GOOD, "Influenza"),  # prompt 3, context 3: 1 + 2 = 3
    sample("alpha x", "", WRONG, "Influenza"),  # prompt 2, context 0: 4/3
    sample("beta y z w", "a b c d e f", BROKEN, "Influenza"),  # prompt 4, context 6: 2 + 8/3
    sample("gamma", "", GOOD, None),  # prompt 1, context 0: 2/3; no label
]


def test_hand_built_set_gives_the_hand_computed_numbers():
    report = quality_report(SET, words, by_first_word, RuleGrader(load_kb()), threshold=0.82)
    assert report["n"] == 4
    assert report["prompt_complexity"] == pytest.approx((3 + 2 + 4 + 1) / 4)
    assert report["input_complexity"] == pytest.approx((3 + 4 / 3 + 14 / 3 + 2 / 3) / 4)
    # alpha, alpha, beta, gamma: three components of four samples
    assert report["richness"] == pytest.approx(3 / 4)
    assert report["redundancy"] == pytest.approx(1 / 4)
    assert report["label_quality"] == pytest.approx({"high": 1 / 3, "medium": 1 / 3, "low": 1 / 3})


def test_label_quality_is_null_without_conditions_and_grades_match_the_rules():
    unlabelled = [{**s, "meta": {}} for s in SET]
    assert (
        quality_report(unlabelled, words, by_first_word, RuleGrader(load_kb()))["label_quality"]
        is None
    )
    grade = RuleGrader(load_kb())
    assert grade.checks(SET[1]) == {"valid": True, "faithful": True, "gold": False}
    assert [grade(s) for s in SET[:3]] == ["high", "medium", "low"]
    assert quality_report([], words, by_first_word)["richness"] is None


def test_components_join_transitively():
    a, b = np.array([1.0, 0.0]), np.array([0.8, 0.6])  # cos(a, b) = 0.8
    c = np.array([0.28, 0.96])  # cos(b, c) = 0.8, cos(a, c) = 0.28
    emb = np.stack([a, b, c])
    assert components(emb, 0.8) == 1 and components(emb, 0.9) == 3


def test_tokenizer_counts_leave_out_special_tokens():
    from transformers import AutoTokenizer

    from cift.models.loading import embedded_model_dir

    count = tokenizer_counter(AutoTokenizer.from_pretrained(str(embedded_model_dir())))
    assert count(["", "hello world"]) == [0, 2]


@pytest.mark.slow
def test_cli_prints_the_report_and_writes_the_page(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(s) + "\n" for s in SET) + '{"instruction": 3}\n')
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cift.cli",
            "quality",
            "report",
            str(data),
            "--out",
            str(tmp_path / "q"),
            "-S",
            "profile=tiny",
        ],
        cwd=ROOT,
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(report) == {
        "n",
        "prompt_complexity",
        "input_complexity",
        "richness",
        "redundancy",
        "label_quality",
    }
    assert report["n"] == 4 and "data.jsonl:5:" in proc.stderr
    assert (tmp_path / "q" / "quality.png").stat().st_size > 0
    assert "data:image/png" in (tmp_path / "q" / "quality.html").read_text()
