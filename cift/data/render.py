"""Record -> input text in three styles: a clinical note, a lay complaint, a short dialogue.

Every finding in the record appears in every rendering (by clinical name or by the KB's lay
phrase), and the template words never name a finding, so a faithfulness check on the rendering
(and on answers written from it) can trust that a finding term in the text came from the record.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

STYLES: tuple[str, ...] = ("note", "lay", "dialogue")

_INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "common": (
        "As a physician, reason step by step and give the most likely diagnosis and advice for "
        "this patient.",
        "Act as an experienced doctor: think through the case step by step, then state the most "
        "likely diagnosis and your advice.",
        "You are a medical expert. Explain your clinical reasoning in numbered steps, then give "
        "the diagnosis and advice.",
        "Work through this case like a clinician: list your reasoning steps, name the most "
        "likely diagnosis, and advise the patient.",
    ),
    "note": (
        "Read the clinical note below. Reason step by step as a physician and give the most "
        "likely diagnosis and management advice.",
        "Here is a patient's clinical note. Interpret it step by step and state the diagnosis "
        "and advice.",
    ),
    "lay": (
        "A patient describes their problem in their own words. As a doctor, reason step by step "
        "and tell them the most likely diagnosis and what to do.",
        "Answer this patient's message like a careful physician: reason in steps, then give the "
        "likely diagnosis and advice.",
    ),
    "dialogue": (
        "Below is a short consultation between a doctor and a patient. Continue as the doctor: "
        "reason step by step, then give the most likely diagnosis and advice.",
        "Read this doctor-patient exchange and, as the physician, explain your reasoning step "
        "by step before giving the diagnosis and advice.",
    ),
}


def instruction_for(style: str, rng: random.Random) -> str:
    """A varied task instruction for an input rendered in `style`."""
    _check_style(style)
    return rng.choice(_INSTRUCTIONS["common"] + _INSTRUCTIONS[style])


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")


def _join(items: Sequence[str], last: str = "and") -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {last} {items[-1]}"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _days(n: int) -> str:
    return "1 day" if n == 1 else f"{n} days"


def lay_phrases(kb: Any) -> dict[str, str]:
    """Symptom clinical name (lowercase) -> the first lay phrase the KB gives it."""
    out: dict[str, str] = {}
    for cond in kb.conditions:
        for s in cond.symptoms:
            if s.lay:
                out.setdefault(s.name.lower(), s.lay)
    return out


def _lay(kb_lay: dict[str, str], name: str) -> str:
    return kb_lay.get(name.lower(), name)


def _tests(record: dict, sep: str = "; ") -> str:
    return sep.join(f"{t['name']}: {t['result']}" for t in record["tests"])


def _other_symptoms(record: dict) -> list[str]:
    return [s for s in record["symptoms"] if s != record["chief_complaint"]]


def _note(record: dict, rng: random.Random) -> str:
    others = _other_symptoms(record)
    hpi = f"{record['chief_complaint']} for {_days(record['duration_days'])}"
    if others:
        hpi += rng.choice([", with ", ", accompanied by ", "; also "]) + _join(others) + "."
    else:
        hpi += "."
    if record["noise_symptoms"]:
        hpi += f" Also reports {_join(record['noise_symptoms'])}."
    lines = [
        f"Age/Sex: {record['age']}-year-old {record['sex']}",
        f"Chief complaint: {record['chief_complaint']}",
        f"History of present illness: {hpi[0].upper()}{hpi[1:]}",
        f"Past history: {'; '.join(record['history'])}",
        f"Examination: {'; '.join(record['exam'])}",
        f"Investigations: {_tests(record)}",
    ]
    return "\n".join(lines)


def _person(record: dict) -> str:
    return {"female": "woman", "male": "man"}.get(record["sex"], "person")


def _lay_text(record: dict, kb_lay: dict[str, str], rng: random.Random) -> str:
    chief = _lay(kb_lay, record["chief_complaint"])
    others = [_lay(kb_lay, s) for s in _other_symptoms(record)]
    opener = rng.choice(
        [
            "Hello doctor, I'm a {age}-year-old {who}.",
            "I am a {age}-year-old {who} and I'm worried.",
        ]
    ).format(age=record["age"], who=_person(record))
    days = _days(record["duration_days"])
    parts = [opener, f"My main problem, for {days} now, is {chief}."]
    if others:
        parts.append(rng.choice(["I also have ", "Other things I've noticed: ", "Besides that: "]))
        parts[-1] += _join(others) + "."
    if record["noise_symptoms"]:
        noise = _join([_lay(kb_lay, s) for s in record["noise_symptoms"]])
        parts.append(f"Not sure it matters, but I've also noticed {noise}.")
    parts.append(f"About my background: {_join(record['history'])}.")
    parts.append(f"The doctor found {_join(record['exam'])}.")
    tests = [f"my {t['name']} result was {t['result']}" for t in record["tests"]]
    parts.append(_cap(_join(tests)) + ".")
    return " ".join(parts)


def _dialogue(record: dict, kb_lay: dict[str, str], rng: random.Random) -> str:
    others = [_lay(kb_lay, s) for s in _other_symptoms(record)]
    lines = [
        "Doctor: " + rng.choice(["What brings you in today?", "How can I help you today?"]),
        f"Patient: I'm a {record['age']}-year-old {_person(record)}. Mainly "
        f"{_lay(kb_lay, record['chief_complaint'])}, for {_days(record['duration_days'])} now.",
        "Doctor: Anything else?",
        "Patient: " + (f"Yes, {_join(others)}." if others else "Nothing else really."),
    ]
    if record["noise_symptoms"]:
        noise = _join([_lay(kb_lay, s) for s in record["noise_symptoms"]])
        lines[-1] += f" And {noise}, if that matters."
    lines += [
        "Doctor: Any relevant medical background?",
        f"Patient: {_cap(_join(record['history']))}.",
        f"Doctor: On examination I found {_join(record['exam'])}. Your results: {_tests(record)}.",
    ]
    return "\n".join(lines)


def render_record(record: dict, style: str, rng: random.Random, *, kb: Any = None) -> str:
    """The record as input text in `style` ("note", "lay" or "dialogue").

    `kb` supplies the lay phrases for the "lay" and "dialogue" styles; None = the shipped KB.
    """
    _check_style(style)
    if style == "note":
        return _note(record, rng)
    if kb is None:
        from cift.kb import load_kb  # the shipped KB only when the caller did not pass one

        kb = load_kb()
    kb_lay = lay_phrases(kb)
    if style == "lay":
        return _lay_text(record, kb_lay, rng)
    return _dialogue(record, kb_lay, rng)


# The instruction a free-text case is wrapped in (`cift eval-file`, serving): one of the
# training instructions, fixed so the same case always gets the same prompt.
CASE_INSTRUCTION = _INSTRUCTIONS["common"][0]
