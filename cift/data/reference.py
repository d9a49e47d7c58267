"""Expert reference answers built in code from the KB and the record (no model involved).

The reference is the gold answer for BLEU/ROUGE-L and a teacher-free sample source, so it must not
depend on any teacher's output: it walks findings -> reasoning (key symptoms, exam, tests, the
distinguishing feature against a confusable condition, red flags) -> conclusion, and names only
findings the record contains, so it always passes `validate_answer`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from cift.data.validity import faithfulness_violations

MAX_KEY_SYMPTOMS = 3
MAX_CONFUSABLES = 2


def _join(items: Sequence[str], last: str = "and") -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {last} {items[-1]}"


def _pick(options: Sequence[str], rng: random.Random | None) -> str:
    return options[0] if rng is None else rng.choice(list(options))


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _article(age: int) -> str:
    return "An" if str(age).startswith("8") or age in (11, 18) else "A"


_STOPWORDS = frozenset(
    {"a", "an", "the", "of", "in", "on", "at", "to", "with", "and", "or", "for", "than", "more"}
)


def _content_words(text: str) -> list[str]:
    return [w for w in re.findall(r"\w+", text.lower()) if w not in _STOPWORDS]


def _matches_red_flag(finding: str, red_flag: str) -> bool:
    """A finding shows a red flag when it has every content word of one of the flag's "or"
    alternatives: "non-blanching petechial rash" shows "non-blanching rash", while a plain
    "headache" does not show "sudden severe headache" (the flag is more specific)."""
    have = set(_content_words(finding))
    alternatives = re.split(r",|\bor\b", red_flag.lower())
    return any(want and set(want) <= have for want in map(_content_words, alternatives))


def _findings_steps(record: dict, rng: random.Random | None) -> list[str]:
    others = [s for s in record["symptoms"] if s != record["chief_complaint"]]
    days = "1 day" if record["duration_days"] == 1 else f"{record['duration_days']} days"
    summary = (
        f"{_article(record['age'])} {record['age']}-year-old {record['sex']} presents with "
        f"{record['chief_complaint']} for {days}"
    )
    summary += f", together with {_join(others)}." if others else "."
    if record["noise_symptoms"]:
        summary += f" The patient also mentions {_join(record['noise_symptoms'])}."
    tests = "; ".join(f"{t['name']}: {t['result']}" for t in record["tests"])
    return [
        summary,
        _pick(["Relevant history: ", "Background: "], rng) + "; ".join(record["history"]) + ".",
        _pick(["Examination shows ", "On examination there is "], rng)
        + _join(record["exam"])
        + f". Investigations: {tests}.",
    ]


def _confusable_steps(kb: Any, cond: Any, record: dict) -> list[str]:
    """Why `cond` and not the confusable conditions whose symptoms the record shares (one step)."""
    others = []
    for name in cond.confusable_with:
        if name in kb.names and len(others) < MAX_CONFUSABLES:
            other = kb.by_name(name)
            if any(s in other.symptom_names for s in record["symptoms"]):
                others.append(other)
    if not others:
        return []
    shared = [s for s in record["symptoms"] if any(s in o.symptom_names for o in others)]
    verb = "is" if len(shared) == 1 else "are"
    lead = f"{_cap(_join(shared))} {verb} also seen in {_join([o.name for o in others])}, but "
    candidates = [f"{lead}{d} points to {cond.name}." for d in cond.distinguishing]
    test = record["tests"][0]
    candidates.append(
        f"{lead}the {test['name']} result ({test['result']}) points to {cond.name} rather than "
        f"{_join([o.name for o in others], 'or')}."
    )  # always faithful: the fallback when every distinguishing text names an absent finding
    return [next(c for c in candidates if not faithfulness_violations([c], record, kb))]


def _reasoning_steps(kb: Any, cond: Any, record: dict, rng: random.Random | None) -> list[str]:
    freq = {s.name: s.freq for s in cond.symptoms}
    key = sorted(record["symptoms"], key=lambda s: -freq.get(s, 0.0))[:MAX_KEY_SYMPTOMS]
    steps = [
        f"{_cap(_join(key))} "
        + _pick(["are typical features of ", "form the classic picture of "], rng)
        + f"{cond.name}.",
        f"The examination findings ({_join(record['exam'])}) fit {cond.name}.",
        "The "
        + _join([f"{t['name']} result ({t['result']})" for t in record["tests"]])
        + f" support {cond.name}.",
    ]
    if record["noise_symptoms"]:
        n = len(record["noise_symptoms"])
        steps.append(
            f"{_cap(_join(record['noise_symptoms']))} {'is' if n == 1 else 'are'} not typical "
            f"of {cond.name} and {'is' if n == 1 else 'are'} probably unrelated."
        )
    steps += _confusable_steps(kb, cond, record)
    seen = record["symptoms"] + record["exam"]
    flags = [f for f in seen if any(_matches_red_flag(f, rf) for rf in cond.red_flags)]
    if flags:
        steps.append(
            f"{_cap(_join(flags))} "
            + ("is a red flag that needs" if len(flags) == 1 else "are red flags that need")
            + " prompt attention."
        )
    return steps


def _advice(cond: Any) -> str:
    parts = ["Go to the emergency department now."] if cond.urgent else []
    parts.append(_cap("; ".join(cond.advice)) + ".")
    parts.append(f"Seek urgent care if you notice any of: {'; '.join(cond.red_flags)}.")
    return " ".join(parts)


def reference_answer(
    kb: Any, record: dict, rng: random.Random | None = None, *, restate: bool = True
) -> dict:
    """The expert answer {"steps": [...], "diagnosis": canonical name, "advice": str}.

    `rng` only varies the wording; None gives the canonical wording. `restate=False` leaves out
    the three steps that restate the record (who, history, examination and tests) and keeps the
    reasoning: a third fewer tokens to train on and to generate.
    """
    cond = kb.by_name(record["condition"])
    steps = _findings_steps(record, rng) if restate else []
    steps += _reasoning_steps(kb, cond, record, rng)
    conclusion = f"Taken together, the most likely diagnosis is {cond.name}"
    steps.append(conclusion + (", which needs emergency care." if cond.urgent else "."))
    return {"steps": steps, "diagnosis": cond.name, "advice": _advice(cond)}
