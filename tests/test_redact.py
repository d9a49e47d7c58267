"""PII redaction: each kind replaced and recorded, clinical numbers untouched, nothing dropped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cift.data.check import import_file
from cift.data.redact import redact_sample, redact_text
from cift.io.jsonl import read_jsonl_trusted


@pytest.mark.parametrize(
    ("text", "expected", "kind", "count"),
    [
        ("Name: John Smith. Fever.", "Name: [NAME]. Fever.", "NAME", 1),
        ("Seen by Dr. Alice Brown and Mr Smith.", "Seen by Dr. [NAME] and Mr [NAME].", "NAME", 2),
        ("Mrs. O'Brien-Jones, Ms Lee", "Mrs. [NAME], Ms [NAME]", "NAME", 2),
        ("Hi, my name is Maria Garcia and I", "Hi, my name is [NAME] and I", "NAME", 1),
        ("Patient name: José Álvarez", "Patient name: [NAME]", "NAME", 1),
        ("DOB: 1980-02-03.", "DOB: [DOB].", "DOB", 1),
        ("She was born on 3 Feb 1980 in", "She was born on [DOB] in", "DOB", 1),
        ("Date of birth: 03/02/1980", "Date of birth: [DOB]", "DOB", 1),
        ("date of birth is February 3, 1980.", "date of birth is [DOB].", "DOB", 1),
        ("Call +44 20 7946 0958 today", "Call [PHONE] today", "PHONE", 1),
        ("ring 020 7946 0958 or 07700 900123", "ring [PHONE] or [PHONE]", "PHONE", 2),
        ("US (555) 123-4567 / 555.123.4567", "US [PHONE] / [PHONE]", "PHONE", 2),
        ("phone: 5551234567; tel 555-1234", "phone: [PHONE]; tel [PHONE]", "PHONE", 2),
        ("Email john.smith@example.co.uk now", "Email [EMAIL] now", "EMAIL", 1),
        ("Lives at 12 Baker Street, London NW1 6XE.", "Lives at [ADDRESS].", "ADDRESS", 1),
        ("221B Baker St. and 45 Elm Road", "[ADDRESS] and [ADDRESS]", "ADDRESS", 2),
        ("SSN 123-45-6789", "SSN [ID]", "ID", 1),
        ("123-45-6789", "[ID]", "ID", 1),
        ("NHS number 943 476 5919", "NHS number [ID]", "ID", 1),
        ("NHS no 9434765919 and 9434765919", "NHS no [ID] and [ID]", "ID", 2),
        ("passport P1234567", "passport [ID]", "ID", 1),
        ("ID: AB-12345", "ID: [ID]", "ID", 1),
        ("MRN 1234567, MRN: 00123456", "MRN [ID], MRN: [ID]", "ID", 2),
        (
            "patient ID 778812; insurance number: XYZ123456",
            "patient ID [ID]; insurance number: [ID]",
            "ID",
            2,
        ),
    ],
)
def test_each_kind_redacted(text: str, expected: str, kind: str, count: int) -> None:
    redacted, found = redact_text(text)
    assert redacted == expected
    assert found == [{"kind": kind, "count": count}]


CLINICAL = (
    "A 34-year-old woman, fever 39.2 C for 2 days, BP 150/95, HR 110 bpm, SpO2 92%, "
    "120/80 mmHg, HbA1c 8.1%, WBC 15.2 x10^9/L, CRP 120 mg/L, eGFR 45 mL/min/1.73m2, "
    "Na 135-145, INR 2.5, 500 mg twice daily, 3 times a day, weight 72.5 kg, pain 7/10, "
    "onset 2024-03-01 at 10:30, Vitamin B12 low, T2DM, ICD E11.9, ECG: ST elevation in II, "
    "Patient: 45-year-old male. Diagnosis: Influenza\nAdvice: rest. Hello doctor, I'm worried. "
    "Case 1: platelets 150-400, 1000 ml fluids, 1.5 L, 0.5 mg, 100 000 units, 12 hours, day 3."
)


def test_clinical_numbers_untouched() -> None:
    assert redact_text(CLINICAL) == (CLINICAL, [])


def test_mixed_text_counts_and_keeps_the_rest() -> None:
    text = "Mr. Smith (DOB: 1980-02-03, MRN 1234567) has fever 39.2 C; call 020 7946 0958."
    redacted, found = redact_text(text)
    assert redacted == "Mr. [NAME] (DOB: [DOB], MRN [ID]) has fever 39.2 C; call [PHONE]."
    assert found == [
        {"kind": "NAME", "count": 1},
        {"kind": "DOB", "count": 1},
        {"kind": "PHONE", "count": 1},
        {"kind": "ID", "count": 1},
    ]


def test_redact_sample_records_changes_and_keeps_input() -> None:
    sample = {
        "id": "a1",
        "instruction": "Summarise the note of Dr. Jones.",
        "input": "Name: Ann Lee, email ann@example.org, temp 38.5 C",
        "output": "Diagnosis: Influenza",
        "meta": {"batch": "b1"},
    }
    before = json.dumps(sample)
    clean, changes = redact_sample(sample)
    assert json.dumps(sample) == before  # the caller's sample is not modified
    assert clean["instruction"] == "Summarise the note of Dr. [NAME]."
    assert clean["input"] == "Name: [NAME], email [EMAIL], temp 38.5 C"
    assert clean["output"] == "Diagnosis: Influenza"
    assert changes == [
        {"field": "instruction", "kind": "NAME", "count": 1},
        {"field": "input", "kind": "NAME", "count": 1},
        {"field": "input", "kind": "EMAIL", "count": 1},
    ]
    assert clean["meta"] == {"batch": "b1", "redaction": changes}
    assert clean["id"] == "a1"


def test_redaction_is_idempotent() -> None:
    once, _ = redact_text("Mr. Smith, DOB: 1980-02-03, 12 Baker Street, ID: AB-12345")
    assert redact_text(once) == (once, [])


def test_import_redacts_and_drops_nothing(tmp_path: Path) -> None:
    rows = [
        {"instruction": "Diagnose.", "input": "My name is Tom Hardy, fever 39 C.", "output": "Flu"},
        {"instruction": "Diagnose.", "input": "Cough for 2 days.", "output": "Cold"},
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    summary = import_file(src, tmp_path / "out.jsonl")
    assert (summary["accepted"], summary["rejected"]) == (2, 0)
    assert summary["redaction"] == {"NAME": 1}
    first, second = read_jsonl_trusted(tmp_path / "out.jsonl")
    assert first["input"] == "My name is [NAME], fever 39 C."
    assert first["meta"]["redaction"] == [{"field": "input", "kind": "NAME", "count": 1}]
    assert second["input"] == "Cough for 2 days."
    assert second["meta"]["redaction"] == []
