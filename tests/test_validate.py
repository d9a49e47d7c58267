"""Answer parsing, validity rules and the code-built reference answers."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from cift.data.answer import parse_answer, render_answer
from cift.data.records import sample_batches, sample_global_test, sample_record
from cift.data.reference import reference_answer
from cift.data.render import STYLES, render_record
from cift.data.validity import faithfulness_violations, is_degenerate, validate_answer
from cift.kb import load_kb

KB_PATH = Path(__file__).parent / "fixtures" / "kb_small.yaml"


@pytest.fixture(scope="module")
def kb():
    return load_kb(KB_PATH)


@pytest.fixture(scope="module")
def flu_record():
    return {
        "id": "t-0001",
        "batch": "t",
        "condition": "Influenza",
        "department": "respiratory",
        "age": 34,
        "sex": "female",
        "duration_days": 2,
        "chief_complaint": "high fever",
        "symptoms": ["high fever", "myalgia", "dry cough"],
        "noise_symptoms": ["dry skin"],
        "history": ["no seasonal vaccination this year"],
        "exam": ["temperature above 38.5 C"],
        "tests": [
            {"name": "rapid respiratory virus antigen test", "result": "positive"},
            {"name": "white cell count", "result": "normal"},
        ],
        "near_duplicate_of": None,
    }


GOOD = """1. The patient has high fever, myalgia and a dry cough for 2 days.
2. Examination shows temperature above 38.5 C; the rapid respiratory virus antigen test is positive.
3. Abrupt fever with muscle aches in an unvaccinated patient points to influenza.
Diagnosis: {dx}
Advice: Rest, fluids and paracetamol; seek care if short of breath."""


def test_parse_answer_variants():
    text = (
        "**Step 1:** look at the fever\nStep 2: check the tests\n3) conclude\n"
        "Diagnosis: Common cold\n**Diagnosis:** Influenza\nAdvice: rest\nand fluids"
    )
    parsed = parse_answer(text)
    assert parsed["steps"] == ["look at the fever", "check the tests", "conclude"]
    assert parsed["diagnosis"] == "Influenza"  # the last Diagnosis line wins
    assert parsed["advice"] == "rest and fluids"
    assert parse_answer("no structure here") == {"steps": [], "diagnosis": None, "advice": None}
    assert parse_answer("1. a\n2. b\n38.5 C is high")["steps"] == ["a", "b"]


def test_good_answer_and_synonym_accepted(kb, flu_record):
    for dx in ("Influenza", "flu", "**influenza A**", "Influenza (flu)."):
        verdict = validate_answer(GOOD.format(dx=dx), flu_record, kb)
        assert verdict.valid, (dx, verdict)
        assert verdict.reason is None and verdict.structured["diagnosis"] == "Influenza"


def test_wrong_and_missing_diagnosis(kb, flu_record):
    assert validate_answer(GOOD.format(dx="COVID-19"), flu_record, kb).reason == "wrong_diagnosis"
    assert validate_answer(GOOD.format(dx="pixie flu"), flu_record, kb).reason == "wrong_diagnosis"
    no_dx = GOOD.replace("Diagnosis: {dx}\n", "")
    assert validate_answer(no_dx, flu_record, kb).reason == "no_diagnosis"


def test_step_count_rules(kb, flu_record):
    assert validate_answer("Diagnosis: flu\nAdvice: rest", flu_record, kb).reason == "no_steps"
    two = "1. high fever\n2. myalgia\nDiagnosis: flu\nAdvice: rest"
    assert validate_answer(two, flu_record, kb).reason == "too_few_steps"
    assert validate_answer(two, flu_record, kb, min_steps=2).valid


def test_no_advice(kb, flu_record):
    text = GOOD.format(dx="flu").rsplit("\nAdvice", 1)[0]
    assert validate_answer(text, flu_record, kb).reason == "no_advice"


@pytest.mark.parametrize("invented", ["chest x-ray", "CT scan"])
def test_unfaithful_step_rejected(kb, flu_record, invented):
    text = GOOD.format(dx="Influenza").replace(
        "3. Abrupt", f"3. The {invented} shows patchy changes. Abrupt"
    )
    verdict = validate_answer(text, flu_record, kb)
    assert not verdict.valid
    assert verdict.reason == f"unfaithful:{invented.lower()}"
    assert verdict.violations == [invented.lower()]


def test_faithfulness_sub_phrases(kb, flu_record):
    # "fever" is part of the record's "high fever"; lay phrases count as present
    ok = ["The fever and aching muscles all over began suddenly.", "A dry tickly cough."]
    assert faithfulness_violations(ok, flu_record, kb) == []
    # an absent longer term is not excused by a present shorter one, and vice versa
    bad = ["There is low-grade fever and a persistent cough.", "Troponin was raised."]
    assert faithfulness_violations(bad, flu_record, kb) == [
        "low-grade fever",
        "persistent cough",
        "troponin",
    ]
    # condition names are not findings ("Common cold" holds no finding claim)
    assert faithfulness_violations(["Unlike Common cold or COVID-19."], flu_record, kb) == []
    record = dict(flu_record, history=["asthma or hay fever in the family"], symptoms=["myalgia"])
    assert faithfulness_violations(["Family history of asthma or hay fever."], record, kb) == []


def test_degenerate_repetition(kb, flu_record):
    loop = "\n".join(f"{i}. The patient has a high fever." for i in range(1, 5))
    text = f"{loop}\nDiagnosis: flu\nAdvice: rest"
    assert validate_answer(text, flu_record, kb).reason == "degenerate_repetition"
    words = " ".join(["fever and myalgia again"] * 8)
    assert is_degenerate(f"1. {words}\n2. x\n3. y")
    assert not is_degenerate(GOOD.format(dx="flu"))


def test_reference_answers_pass_validation(kb):
    batches = sample_batches(kb, [{"name": "b1", "focus": ["skin"]}, {"name": "b2"}], 150, seed=2)
    records = [r for rs in batches.values() for r in rs] + sample_global_test(kb, 10, seed=9)
    for i, record in enumerate(records):
        rng = random.Random(i)
        structured = reference_answer(kb, record, rng)
        text = render_answer(structured)
        verdict = validate_answer(text, record, kb)
        assert verdict.valid, (verdict.reason, text)
        assert verdict.structured == structured
        assert structured["diagnosis"] == record["condition"]
        for style in STYLES:  # the answer stays faithful to what every rendering shows
            rendered = render_record(record, style, rng, kb=kb)
            assert faithfulness_violations([rendered], record, kb) == []


def test_reference_content(kb):
    rng = random.Random(4)
    mi = sample_record(kb, "Myocardial infarction", rng, record_id="m-1", batch="m")
    mi.update(symptoms=["crushing chest pain", "diaphoresis", "fainting"], noise_symptoms=[])
    mi["chief_complaint"] = "crushing chest pain"
    ref = reference_answer(kb, mi)
    assert ref["advice"].startswith("Go to the emergency department now.")
    assert ref["advice"].endswith(
        "Seek urgent care if you notice any of: chest pain at rest or fainting; low blood pressure."
    )
    flags = [s for s in ref["steps"] if "red flag" in s]
    assert flags == ["Fainting is a red flag that needs prompt attention."]
    assert ref["steps"][-1].startswith("Taken together, the most likely diagnosis is")
    covid = dict(
        sample_record(kb, "COVID-19", rng, record_id="c-1", batch="c"),
        symptoms=["fever", "loss of smell", "sore throat"],
    )
    steps = reference_answer(kb, covid)["steps"]
    assert any("also seen in Common cold" in s and "loss of smell" in s for s in steps)
    assert reference_answer(kb, covid) == reference_answer(kb, covid)
    out = render_answer({"steps": ["a", "b"], "diagnosis": "Influenza", "advice": "rest"})
    assert out == "1. a\n2. b\nDiagnosis: Influenza\nAdvice: rest"


def test_reference_and_renderings_faithful_on_shipped_kb():
    shipped = load_kb()
    for i, record in enumerate(sample_global_test(shipped, 3, seed=0)):
        rng = random.Random(i)
        text = render_answer(reference_answer(shipped, record, rng))
        verdict = validate_answer(text, record, shipped)
        assert verdict.valid, (verdict.reason, text)
        for style in STYLES:
            rendered = render_record(record, style, rng, kb=shipped)
            assert faithfulness_violations([rendered], record, shipped) == [], rendered
