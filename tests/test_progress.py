"""Progress on the long loops (IFD, MiniLM, G-DIG gradients, answers, teachers and judges),
drawn on a terminal only."""

from __future__ import annotations

import io
import sys

import pytest

import cift.evaluate.answers
import cift.models.generator
import cift.models.openai_chat
import cift.progress
import cift.scoring.embeddings
import cift.scoring.gradients
import cift.scoring.ifd
from cift.models.loading import ModelSpec
from cift.models.sampling import Sampling

SYSTEM = "You are an experienced physician."
SAMPLE = {
    "instruction": "Diagnose the patient.",
    "input": "fever, cough, three days",
    "output": "1. Fever.\n2. Cough.\n3. Three days.\nDiagnosis: Influenza\nAdvice: Rest.",
}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_draw_on_a_terminal_only(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a pipe, a DVC log, CI
    with cift.progress.progress(desc="quiet", total=3) as bar:
        bar.update(3)
    assert bar.disable and sys.stderr.getvalue() == ""
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert list(cift.progress.progress(range(3), desc="shown", unit="batch")) == [0, 1, 2]
    assert "shown" in sys.stderr.getvalue()


@pytest.fixture
def bars(monkeypatch) -> list[dict]:
    """Every bar the modules under test open: its description, total and items counted."""
    opened: list[dict] = []
    real = cift.progress.progress

    def recording(iterable=None, *, desc, total=None, unit="it"):
        bar = real(iterable, desc=desc, total=total, unit=unit)
        entry = {"desc": desc, "total": total, "count": 0}
        opened.append(entry)
        update = bar.update

        def counted(n=1):
            entry["count"] += n
            return update(n)

        bar.update = counted
        if iterable is None:
            return bar

        def items():
            for item in bar:
                entry["count"] += 1
                yield item

        return items()

    for module in (
        cift.scoring.ifd,
        cift.scoring.embeddings,
        cift.scoring.gradients,
        cift.evaluate.answers,
        cift.models.generator,
        cift.models.openai_chat,
    ):
        monkeypatch.setattr(module, "progress", recording)
    return opened


@pytest.fixture(scope="module")
def tiny():
    return ModelSpec(name="tiny", source="tiny_random").load(dtype="float32")


def test_ifd_gradients_and_embeddings_report_progress(bars, tiny):
    from cift.scoring.embeddings import encode_sentences
    from cift.scoring.gradients import gradient_sketches
    from cift.scoring.ifd import score_ifd
    from cift.train.data import tokenize_sample
    from cift.train.module import wrap_lora

    samples = [{**SAMPLE, "id": f"s{i}", "input": SAMPLE["input"] * (i + 1)} for i in range(5)]
    score_ifd(tiny.model, tiny.tokenizer, samples, system_prompt=SYSTEM, batch_size=4)
    encode_sentences(["fever", "cough and fever", "rest"], batch_size=2)
    model = wrap_lora(
        tiny.model, {"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["q_proj"]}
    )
    examples = [tokenize_sample(tiny.tokenizer, s, SYSTEM, 256) for s in samples]
    gradient_sketches(model, examples, tiny.tokenizer.pad_token_id, dim=8, batch_size=2)
    counted = {b["desc"]: b["count"] for b in bars}
    assert counted["IFD"] >= 3  # batches of the 10 sequences (two passes per sample)
    assert counted["MiniLM"] == 3  # sentences
    assert counted["G-DIG gradients"] == 3  # batches of two


def test_answers_and_the_local_teacher_report_progress(bars, tmp_path):
    from cift.evaluate.answers import AnswerCache, Version, answer_sampling, generate_answers
    from cift.models.local_chat import LocalTeacher

    teacher = LocalTeacher(ModelSpec(name="tiny", source="tiny_random"), batch_size=2)
    samples = [{**SAMPLE, "id": f"s{i}"} for i in range(3)]
    version = Version(name="main/base", key="k", adapter=None)
    sampling = answer_sampling(4)
    generate_answers(
        lambda *_: teacher, version, samples, SYSTEM, sampling, AnswerCache(tmp_path), batch_size=2
    )
    counted = {b["desc"]: b["count"] for b in bars}
    assert counted["answers main/base"] == 3
    assert counted[f"{teacher.name} generate"] == 2  # the judge's generator shows the same bar


def test_an_endpoint_teacher_or_judge_reports_each_request(bars, monkeypatch):
    from cift.models.chat import TeacherReply, TeacherRequest
    from cift.models.openai_chat import OpenAITeacher

    teacher = OpenAITeacher("http://127.0.0.1:9/v1", "m", name="judge-openai", concurrency=2)
    monkeypatch.setattr(teacher, "_one", lambda r, *_: TeacherReply(r.key, "A", 1, 1))
    requests = [TeacherRequest(f"k{i}", [{"role": "user", "content": "q"}]) for i in range(5)]
    replies = teacher.generate(requests, Sampling(max_new_tokens=4, seed=0))
    assert [r.key for r in replies] == [f"k{i}" for i in range(5)]
    assert [(b["desc"], b["total"], b["count"]) for b in bars] == [("judge-openai", 5, 5)]
