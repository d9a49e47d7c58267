"""Validity rules for an answer: steps, gold diagnosis, faithfulness, repetition.

A small teacher invents findings (an ultrasound or CT the record never had); an answer that names a
KB finding absent from the record is a defect, and so is one that loops. Each rule gives a reason
string, so a rejected sample is kept with why it was rejected, never silently dropped.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cift.data.answer import normalise_diagnosis, parse_answer, strip_markup

_WORD = re.compile(r"\w+")
_HYPHENS = re.compile(r"[\-‐‑–—]")
_SPACES = re.compile(r"\s+")
MAX_SAME_SENTENCE = 2  # a step/sentence seen 3 times is a loop
MAX_NGRAM_SHARE = 0.3  # one 4-gram covering >30% of the words is a loop
MIN_WORDS_FOR_NGRAM_RULE = 20


@dataclass
class Verdict:
    """Outcome of `validate_answer`: `reason` is the first failing rule, None when valid."""

    valid: bool
    reason: str | None
    structured: dict
    violations: list[str] = field(default_factory=list)


def normalise_text(text: str) -> str:
    """Lowercase, hyphens to spaces, one space between words: how terms and texts are compared."""
    return _SPACES.sub(" ", _HYPHENS.sub(" ", text.lower())).strip()


def _term_regex(terms: Iterable[str]) -> re.Pattern[str]:
    alternation = "|".join(re.escape(t) for t in sorted(set(terms), key=lambda t: (-len(t), t)))
    return re.compile(rf"(?<!\w)(?:{alternation})(?!\w)")


def _subphrases(phrase: str) -> set[str]:
    """Every run of consecutive words of `phrase` ("high fever" -> high, fever, high fever)."""
    words = [w.strip(".,;:!?()") for w in phrase.split()]
    return {" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)}


class _KBTerms:
    """Finding terms of one KB, compiled once: term regex, lay phrases by symptom, names."""

    def __init__(self, kb: Any) -> None:
        self.kb = kb
        # Bare results ("positive", "normal") are judged through their test's name, not alone.
        self.spelling: dict[str, str] = {}  # normalised term -> KB spelling, for reasons
        for term, kind in kb.finding_terms().items():
            if kind != "result" and normalise_text(term):
                self.spelling.setdefault(normalise_text(term), term)
        self.terms = set(self.spelling)
        self.regex = _term_regex(self.terms)
        self.lays: dict[str, set[str]] = {}
        for cond in kb.conditions:
            for s in cond.symptoms:
                if s.lay:
                    self.lays.setdefault(normalise_text(s.name), set()).add(normalise_text(s.lay))
        self.condition_names = {normalise_text(c.name) for c in kb.conditions}


_CACHE: dict[int, _KBTerms] = {}


def _kb_terms(kb: Any) -> _KBTerms:
    cached = _CACHE.get(id(kb))
    if cached is None or cached.kb is not kb:
        if len(_CACHE) > 8:
            _CACHE.clear()
        cached = _CACHE[id(kb)] = _KBTerms(kb)
    return cached


def record_phrases(record: dict, kb: Any) -> set[str]:
    """Normalised phrases the record states: findings, their lay phrases, tests and results."""
    info = _kb_terms(kb)
    phrases: set[str] = set()
    for key in ("symptoms", "noise_symptoms", "history", "exam"):
        for item in record.get(key, []):
            name = normalise_text(item)
            phrases.add(name)
            phrases |= info.lays.get(name, set())
    for t in record.get("tests", []):
        phrases.add(normalise_text(t["name"]))
        phrases.add(normalise_text(str(t["result"])))
    phrases.discard("")
    return phrases


def _spans(text: str, phrases: Iterable[str]) -> list[tuple[int, int]]:
    spans = []
    for phrase in phrases:
        spans += [m.span() for m in re.finditer(rf"(?<!\w){re.escape(phrase)}(?!\w)", text)]
    return spans


def faithfulness_violations(steps: list[str], record: dict, kb: Any) -> list[str]:
    """KB finding terms (KB spelling, lowercase) named in `steps` that the record does not contain.

    A term is present when it is one of the record's phrases or a word-bounded part of one
    ("fever" when the record has "high fever"); a term inside a present phrase or inside the name
    of the record's condition (or any canonical condition name) is not a claim of its own.
    """
    info = _kb_terms(kb)
    present = record_phrases(record, kb)
    present_terms = {sub for p in present for sub in _subphrases(p) if sub in info.terms}
    cond = kb.by_name(record["condition"])
    protected = present | info.condition_names | {normalise_text(s) for s in cond.synonyms}
    found: list[str] = []
    for step in steps:
        text = normalise_text(strip_markup(step))
        shields = None
        for m in info.regex.finditer(text):
            term = m.group(0)
            if term in present_terms or info.spelling[term] in found:
                continue
            if shields is None:
                shields = _spans(text, protected)
            if any(a <= m.start() and m.end() <= b for a, b in shields):
                continue
            found.append(info.spelling[term])
    return found


def _sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+|\n+", text)
    keys = [" ".join(_WORD.findall(p.lower())) for p in parts]
    return [re.sub(r"^(?:step )?\d+ ", "", k) for k in keys if k]


def is_degenerate(text: str) -> bool:
    """True when a step/sentence repeats >= 3 times or one word 4-gram covers > 30% of words."""
    counts = Counter(_sentences(text))
    if counts and counts.most_common(1)[0][1] > MAX_SAME_SENTENCE:
        return True
    words = _WORD.findall(text.lower())
    if len(words) < MIN_WORDS_FOR_NGRAM_RULE:
        return False
    grams = Counter(tuple(words[i : i + 4]) for i in range(len(words) - 3))
    return grams.most_common(1)[0][1] * 4 / len(words) > MAX_NGRAM_SHARE


def validate_answer(text: str, record: dict, kb: Any, *, min_steps: int = 3) -> Verdict:
    """Check an answer against the record; the first failing rule in this order is the reason:
    no_steps, too_few_steps, no_diagnosis, wrong_diagnosis, unfaithful:<term>, no_advice,
    degenerate_repetition."""
    parsed = parse_answer(text)
    canonical = normalise_diagnosis(kb, parsed["diagnosis"]) if parsed["diagnosis"] else None
    structured = {
        "steps": parsed["steps"],
        "diagnosis": canonical or parsed["diagnosis"],
        "advice": parsed["advice"],
    }
    violations = faithfulness_violations(parsed["steps"], record, kb)

    def verdict(reason: str | None) -> Verdict:
        return Verdict(reason is None, reason, structured, violations)

    if not parsed["steps"]:
        return verdict("no_steps")
    if len(parsed["steps"]) < min_steps:
        return verdict("too_few_steps")
    if not parsed["diagnosis"]:
        return verdict("no_diagnosis")
    if canonical != kb.by_name(record["condition"]).name:
        return verdict("wrong_diagnosis")
    if violations:
        return verdict(f"unfaithful:{violations[0]}")
    if not parsed["advice"]:
        return verdict("no_advice")
    if is_degenerate(text):
        return verdict("degenerate_repetition")
    return verdict(None)
