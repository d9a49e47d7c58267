"""CoT generation: accounting, retries, staged decoding, resume after a kill, the local teacher."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from cift.data.answer import render_answer
from cift.data.records import sample_record
from cift.data.reference import reference_answer
from cift.generate.cot import GenerationSettings, ProgressLog, generate_cot
from cift.generate.teachers.kb_template import KBTemplateTeacher
from cift.kb import load_kb
from cift.models.chat import TeacherReply, TeacherRequest
from cift.models.sampling import Sampling

KB_PATH = Path(__file__).parent / "fixtures" / "kb_small.yaml"


@pytest.fixture(scope="module")
def kb():
    return load_kb(KB_PATH)


@pytest.fixture(scope="module")
def records(kb):
    rng = random.Random(3)
    return [
        sample_record(kb, kb.conditions[i % len(kb.conditions)], rng, record_id=f"r{i}", batch="b1")
        for i in range(10)
    ]


class ScriptedTeacher:
    """Answers from the KB, except for records listed in `bad` (wrong for the first n tries)."""

    name = "scripted"

    def __init__(self, kb, bad: dict[str, int] | None = None, fail_after: int | None = None):
        self.kb, self.bad, self.calls, self.seen = kb, dict(bad or {}), 0, []
        self.fail_after = fail_after

    def generate(self, requests, sampling):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        replies = []
        for req in requests:
            self.seen.append(req.key)
            if self.bad.get(req.key, 0) > 0:
                self.bad[req.key] -= 1
                text = (
                    "1. The chest x-ray and CT scan show it.\n2. a\n3. b\nDiagnosis: x\nAdvice: y"
                )
            else:
                text = render_answer(reference_answer(self.kb, req.record))
            replies.append(TeacherReply(req.key, text, 10, 20))
        return replies


def settings(**kw) -> GenerationSettings:
    return GenerationSettings(system_prompt="You are a doctor.", chunk_size=4, **kw)


def test_attempted_equals_valid_plus_rejected_and_retries(kb, records, tmp_path):
    teacher = ScriptedTeacher(kb, bad={"r0": 1, "r1": 5})
    result = generate_cot(
        records,
        teacher,
        kb,
        settings(max_retries=2),
        tmp_path / "p.jsonl",
        ["note", "lay", "dialogue"],
    )
    stats = result.stats()
    assert stats["attempted"] == stats["valid"] + stats["rejected"] == 10 + 1 + 2
    assert stats["valid"] == 9 and stats["records_rejected"] == 1
    assert {r["record_id"] for r in result.rejects} == {"r0", "r1"}
    assert all(r["reason"].startswith(("unfaithful", "wrong_diagnosis")) for r in result.rejects)
    assert [r["final"] for r in result.rejects if r["record_id"] == "r1"] == [False, False, True]
    sample = next(s for s in result.samples if s["meta"]["record_id"] == "r0")
    assert sample["meta"]["generation"]["attempt"] == 1
    assert sample["meta"]["teacher"] == "scripted"
    for s in result.samples:
        assert set(s) == {"id", "instruction", "input", "output", "meta"}
        assert s["output"].splitlines()[-2].startswith("Diagnosis: ")
        assert s["meta"]["structured"]["diagnosis"] == s["meta"]["condition"]


def test_resume_after_kill_asks_only_for_the_rest(kb, records, tmp_path):
    progress = tmp_path / "p.jsonl"
    killed = ScriptedTeacher(kb, fail_after=1)
    with pytest.raises(KeyboardInterrupt):
        generate_cot(records, killed, kb, settings(), progress, ["note"])
    assert len(progress.read_text().splitlines()) == 4  # the first chunk was kept
    with progress.open("a") as fh:
        fh.write('{"record_id": "r9", "status": "va')  # a torn line from the kill
    resumed = ScriptedTeacher(kb)
    result = generate_cot(records, resumed, kb, settings(), progress, ["note"])
    assert sorted(resumed.seen) == sorted(f"r{i}" for i in range(4, 10))
    assert len(result.samples) == 10
    fresh = generate_cot(
        records, ScriptedTeacher(kb), kb, settings(), tmp_path / "q.jsonl", ["note"]
    )
    assert [s["output"] for s in fresh.samples] == [s["output"] for s in result.samples]


def test_progress_log_ignores_torn_tail(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"a": 1}\n{"b": ')
    assert ProgressLog(path).entries == [{"a": 1}]


class StagedTeacher:
    """Records the prompts of staged decoding and answers each phase."""

    name = "staged"

    def __init__(self):
        self.calls = []

    def generate(self, requests, sampling):
        self.calls.append((requests, sampling.temperature, list(sampling.stop) or None))
        prefill = requests[0].messages[-1]["content"]
        if prefill == "1.":
            text = " Fever.\n2. Cough.\n3. Fatigue.\nDiagnosis: ignored"
        elif prefill.endswith("Diagnosis:"):
            text = " " + (requests[0].gold or "unknown") + "\nextra"
        else:
            text = " Rest and fluids.\nmore"
        return [TeacherReply(r.key, text, 1, 1) for r in requests]


def test_staged_decoding_builds_the_format_field_by_field(kb, records, tmp_path):
    teacher = StagedTeacher()
    rec = [r for r in records if set(r["symptoms"]) >= {"fever"}][:1] or records[:1]
    generate_cot(
        rec, teacher, kb, settings(decoding="staged", max_retries=0), tmp_path / "p.jsonl", ["note"]
    )
    (steps, _, stop1), (diag, t2, _), (adv, _, _) = teacher.calls
    assert steps[0].messages[-1] == {"role": "assistant", "content": "1."}
    assert "Diagnosis:" in stop1 and t2 == 0.0
    assert diag[0].messages[-1]["content"].endswith("3. Fatigue.\nDiagnosis:")
    gold = rec[0]["condition"]
    assert adv[0].messages[-1]["content"].endswith(f"Diagnosis: {gold}\nAdvice:")
    assert f"The confirmed diagnosis is {gold}" in steps[0].messages[1]["content"]


def test_blind_teacher_is_not_told_the_diagnosis(kb, records, tmp_path):
    teacher = StagedTeacher()
    generate_cot(
        records[:1],
        teacher,
        kb,
        settings(decoding="staged", blind=True, max_retries=0),
        tmp_path / "p.jsonl",
        ["note"],
    )
    user = teacher.calls[0][0][0].messages[1]["content"]
    assert "confirmed diagnosis" not in user and teacher.calls[0][0][0].gold is None


@pytest.mark.parametrize("restate", [True, False])
def test_kb_template_teacher_is_always_valid(kb, records, tmp_path, restate: bool):
    """With or without the steps that restate the record: valid, and without them shorter by
    exactly those three steps."""
    teacher = KBTemplateTeacher(kb=str(KB_PATH), restate=restate)
    result = generate_cot(records, teacher, kb, settings(), tmp_path / "p.jsonl", ["lay"])
    assert result.stats()["yield"] == 1.0
    assert {s["meta"]["teacher"] for s in result.samples} == {"kb_template"}
    full = generate_cot(
        records, KBTemplateTeacher(kb=str(KB_PATH)), kb, settings(), tmp_path / "f.jsonl", ["lay"]
    )
    for short, long_ in zip(result.samples, full.samples, strict=True):
        steps = [line for line in short["output"].splitlines() if line[:1].isdigit()]
        long_steps = [line for line in long_["output"].splitlines() if line[:1].isdigit()]
        assert len(steps) == len(long_steps) - (0 if restate else 3)
        assert short["output"].split("Diagnosis:")[1] == long_["output"].split("Diagnosis:")[1]


@pytest.mark.slow
def test_local_teacher_batches_in_order_with_stops(tmp_path):
    from cift.models import ModelSpec
    from cift.models.local_chat import LocalTeacher

    teacher = LocalTeacher(ModelSpec(name="tiny", source="tiny_random"), batch_size=3)
    msgs = [[{"role": "user", "content": "x " * n}] for n in (1, 30, 5, 12, 2)]
    reqs = [TeacherRequest(str(i), m) for i, m in enumerate(msgs)]
    reqs.append(TeacherRequest("p", [*msgs[0], {"role": "assistant", "content": "1."}]))
    out = teacher.generate(reqs, Sampling(max_new_tokens=8, seed=0))
    assert [r.key for r in out] == [r.key for r in reqs]
    assert all(0 < r.completion_tokens <= 8 for r in out)
    assert teacher.prompt_text(reqs[-1]).endswith("<|im_start|>assistant\n1.")
    again = teacher.generate(reqs, Sampling(max_new_tokens=8, seed=0))
    assert [r.text for r in again] == [r.text for r in out]  # greedy is deterministic
    json.dumps([r.__dict__ for r in out])


def test_answers_per_record_gives_distinct_ids_and_resumes(kb, records, tmp_path):
    teacher = KBTemplateTeacher(kb=str(KB_PATH))
    two = settings(answers_per_record=2)
    result = generate_cot(records, teacher, kb, two, tmp_path / "p.jsonl", ["lay"])
    ids = sorted(s["id"] for s in result.samples)
    assert ids == sorted(f"{r['id']}-a{j}" for r in records for j in (1, 2))
    again = generate_cot(records, teacher, kb, two, tmp_path / "p.jsonl", ["lay"])
    assert sorted(s["id"] for s in again.samples) == ids  # nothing asked twice


def test_evolved_prompts_replace_the_training_instruction(kb, records, tmp_path):
    from cift.generate.evolve import PromptAssembler, load_parts

    prompts = PromptAssembler([], load_parts(), {"summary": 1.0}, seed=0)
    teacher = KBTemplateTeacher(kb=str(KB_PATH))
    result = generate_cot(
        records, teacher, kb, settings(), tmp_path / "p.jsonl", ["lay"], prompts=prompts
    )
    assert result.samples and all(s["meta"]["prompt_task"] == "summary" for s in result.samples)
    assert all(load_parts()["formats"]["summary"] in s["instruction"] for s in result.samples)


def test_synthetic_batch_drops_training_close_to_heldout(tmp_path, monkeypatch):
    """generate@<i>'s library: a training candidate that copies a held-out text goes to rejects
    with its reason, and generate.json reports within-batch and cross-batch contamination apart."""
    import cift.generate.batches as batches
    from cift.config import domain_kb
    from tests.conftest import bag_embed, compose

    monkeypatch.setattr(batches, "minilm_embedder", lambda: bag_embed)
    cfg = compose(["profile=tiny", f"paths.data={tmp_path}"])
    kb = domain_kb(cfg)
    target = batches._split(cfg, batches.synthetic_records(cfg, kb)["b2"], "b2")["train"][0]
    text = batches.record_text(target, kb, cfg)
    heldout = [{"id": "g-0001", "batch": "global", "split": "global_test", "text": text}]
    result = batches.synthetic_batch(cfg, "b2", heldout)
    trained = {s["meta"]["record_id"] for s in result["train"]}
    assert target["id"] not in trained
    (reject,) = [r for r in result["rejects"] if r["record_id"] == target["id"]]
    assert reject["reason"] == "cross_batch_contamination:ngram_overlap"
    assert (reject["eval_id"], reject["eval_batch"]) == ("g-0001", "global")
    contamination = result["metrics"]["contamination"]
    assert set(contamination) == {"within_batch", "cross_batch"}
    assert contamination["cross_batch"]["dropped"] == 1
    assert contamination["cross_batch"]["by_eval_batch"] == {"global": 1}
    assert contamination["cross_batch"]["heldout_checked"] == 1
    own = {r["id"] for r in result["records"] if r["split"] in ("val", "test")}
    assert {e["id"] for e in result["heldout"]} == own
    assert all(e["batch"] == "b2" and e["text"] for e in result["heldout"])


def test_imported_batch_drops_training_close_to_heldout(tmp_path, monkeypatch):
    import cift.generate.imported as imported
    from tests.conftest import bag_embed, compose

    monkeypatch.setattr(imported, "minilm_embedder", lambda: bag_embed)
    lines = [
        {
            "id": f"c{i}",
            "instruction": "Diagnose.",
            "input": f"Patient {i}: fever for {i + 2} days with a dry cough and aching muscles "
            f"after a trip number {i} abroad, no rash, no vomiting, normal chest exam.",
            "output": "1. Fever.\n2. Cough.\n3. Aches.\nDiagnosis: Influenza\nAdvice: Rest.",
        }
        for i in range(12)
    ]
    src = tmp_path / "clinic.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    cfg = compose(["profile=tiny"])
    plain = imported.imported_batch(cfg, {"name": "clinic", "source": str(src)})
    target = plain["train"][0]
    heldout = [{"id": "b2-0003", "batch": "b2", "split": "test", "text": target["input"]}]
    result = imported.imported_batch(cfg, {"name": "clinic", "source": str(src)}, heldout)
    assert [s["id"] for s in result["train"]] == [s["id"] for s in plain["train"][1:]]
    (reject,) = [r for r in result["rejects"] if r.get("eval_id")]
    assert (reject["record_id"], reject["eval_batch"]) == (target["id"], "b2")
    assert reject["reason"].startswith("cross_batch_contamination:")
    assert result["metrics"]["contamination"]["cross_batch"]["dropped"] == 1
    assert {e["id"] for e in result["heldout"]} == {
        s["id"] for side in ("val", "test") for s in result[side]
    }


class WrongTeacher:
    """Every answer names the wrong diagnosis (a noisy member of a mix); takes any config."""

    rewrites_text = True

    def __init__(self, name: str = "local", **_: object) -> None:
        self.name = name

    def generate(self, requests, sampling):
        text = "1. a\n2. b\n3. c\nDiagnosis: Nothing at all\nAdvice: Rest."
        return [TeacherReply(r.key, text, 5, 7) for r in requests]


def test_mixed_teacher_gives_each_record_one_member_by_share(tmp_path, monkeypatch):
    """teacher=mixed: records split between members by their shares (seeded per record), each
    member's yield and tokens/s reported apart, its rejects kept with their reasons, and the
    samples in the stream's order."""
    import cift.generate.batches as batches
    from cift.generate.teachers.mix import assign, build_members
    from tests.conftest import bag_embed, compose

    monkeypatch.setattr(batches, "minilm_embedder", lambda: bag_embed)
    wrong = "{_target_:tests.test_generate.WrongTeacher}"
    cfg = compose(
        [
            *("profile=tiny", "teacher=mixed", f"paths.data={tmp_path}"),
            *(f"teacher.members.local.backend={wrong}", "data.records_per_batch=60"),
        ]
    )
    members = build_members(cfg.teacher)
    assert [(m.name, m.share, m.decoding) for m in members] == [
        ("local", 0.25, "staged"),
        ("kb_template", 0.75, "single"),
    ]
    result = batches.synthetic_batch(cfg, "b1", [])
    metrics = result["metrics"]
    per = metrics["teachers"]
    assert metrics["teacher"] == "mixed" and metrics["decoding"] == "staged+single"
    assert per["kb_template"]["yield"] > 0.8 and per["local"]["yield"] == 0.0
    assert sum(per["local"]["reject_reasons"].values()) == per["local"]["rejected"] > 0
    n_train = metrics["records"]["train"]
    n_local = per["local"]["attempted"] // (cfg.generate.max_retries + 1)
    assert 0 < n_local < n_train / 2  # a quarter, drawn per record
    assert per["kb_template"]["valid"] == len(result["train"]) <= n_train - n_local
    assert metrics["valid"] == per["kb_template"]["valid"] and metrics["rejected"] == sum(
        p["rejected"] for p in per.values()
    )
    assert {s["meta"]["teacher"] for s in result["train"]} == {"kb_template"}
    train = [r["id"] for r in result["records"] if r["split"] == "train"]
    order = [s["meta"]["record_id"] for s in result["train"]]
    assert order == [i for i in train if i in set(order)]
    again = assign([{"id": i} for i in reversed(train)], members, cfg.seed)
    assert len(again["local"]) == n_local and not {r["id"] for r in again["local"]} & set(order)
