"""Patients' own words: a record as a short first-person message, the way people write to a
doctor online, unlike every input the training renderers (`cift.data.render`) produce.

A message is 1-4 sentences of casual prose built from the record's symptoms in the KB's lay
phrases (any phrase the KB gives that symptom, drawn afresh), a duration in words, sometimes the
writer's age and sex, and a worry, often hedged. It has no headings or speaker labels, no exam
findings or test results (patients rarely know them), and never names the condition. The probe
set tells whether a model learned to diagnose or only to read the generator's templates.
"""

from __future__ import annotations

import functools
import random
import re
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

from cift.data.records import sample_record
from cift.data.render import STYLES, render_record

# Phrases the training renderers write around a record's findings (render.py): a probe message
# contains none of them (case-insensitive), so it reads like no training input.
TEMPLATE_PHRASES: tuple[str, ...] = (
    "year-old",
    "my main problem",
    "i also have",
    "other things i've noticed",
    "besides that",
    "not sure it matters",
    "about my background",
    "the doctor found",
    "result was",
    "hello doctor",
    "and i'm worried",
    "doctor:",
    "patient:",
    "age/sex",
    "chief complaint",
    "history of present illness",
    "past history",
    "examination:",
    "investigations:",
    "accompanied by",
    "also reports",
    "what brings you in",
    "anything else",
    "nothing else really",
    "if that matters",
    "medical background",
    "mainly",
)
_WORD = re.compile(r"\w+")  # words as the contamination rule counts them
NGRAM = 6  # no probe message shares a word 6-gram with a training rendering of its record
_MAX_TRIES = 50

_GREETINGS = ("Hi, ", "Hello, ", "Hi there, ", "Morning, ", "")
# {subj}: "I've" / "she's" / "he's"; {dur}: a duration; {list}: symptoms as fragments
_OPENERS = (
    "{greet}{subj} been unwell for {dur} - {list}.",
    "{greet}{subj} been feeling rough for {dur} - {list}.",
    "{greet}{list}, going on {dur}.",
    "{greet}{list}, started {dur} ago.",
    "{greet}{list}, on and off for {dur}.",
    "{greet}{subj} not been right for {dur} - {list}.",
    "{greet}for {dur} {subj} had this going on - {list}.",
)
_MORE = (
    "Also {list}.",
    "Plus {list}.",
    "On top of that, {list}.",
    "Then there's {list} too.",
    "Oh and {list}.",
    "{List} too.",
)
_NOISE = (
    "Probably unrelated, but {list} as well.",
    "No idea if it's connected but {list} lately.",
    "Might be nothing, but {list} too.",
)
_ABOUT = (
    "I'm {age}, {sex}, if it helps.",
    "For context I'm {age} and {sex}.",
    "I'm {sex}, {age}.",
    "Bit of context, I'm {age}.",
)
_ABOUT_CHILD = (
    "It's my {kid}, {age}, I'm asking about.",
    "I'm writing for my {kid}, who is {age}.",
    "My {kid} is {age}, for context.",
)
_WORRY = (
    "Should I be worried?",
    "I'm probably overreacting, but should I be worried?",
    "Maybe it's nothing, but is this something I should get checked?",
    "I might be making a fuss over nothing, but it's not going away.",
    "Is this anything to worry about?",
    "What do you think it could be?",
    "Do I need to get this looked at?",
    "I'm starting to get a bit anxious about it.",
    "Could it be something serious?",
    "I don't know if I'm overreacting.",
    "Any idea what's going on?",
    "Any advice would be appreciated.",
    "I'd really like to know what this is.",
)
_FIRST_PERSON = re.compile(r"\b(I|I'm|I've|I'd|my|me)\b")
# the worry closes a message that has no first-person word yet (a bare list of symptoms)
_WORRY_FIRST_PERSON = tuple(w for w in _WORRY if _FIRST_PERSON.search(w))
_JOINERS = (" and ", " and ", ", and ", " plus ")
_SEX = {"female": ("female", "a woman"), "male": ("male", "a man")}
_KID = {"female": "daughter", "male": "son"}
_CHILD_AGE = 14  # younger writers are written for by a parent
# every frame word list, for the check that no frame names a condition
FRAMES: tuple[str, ...] = (
    *_GREETINGS,
    *_OPENERS,
    *_MORE,
    *_NOISE,
    *_ABOUT,
    *_ABOUT_CHILD,
    *_WORRY,
    *_JOINERS,
)


@functools.lru_cache(maxsize=8)  # KBs are immutable and hash by identity
def lay_variants(kb: Any) -> dict[str, tuple[str, ...]]:
    """Symptom clinical name (lowercase) -> every lay phrase the KB gives it, in KB order."""
    out: dict[str, list[str]] = {}
    for cond in kb.conditions:
        for s in cond.symptoms:
            if s.lay and s.lay not in out.setdefault(s.name.lower(), []):
                out[s.name.lower()].append(s.lay)
    return {name: tuple(lays) for name, lays in out.items()}


def _duration(days: int, rng: random.Random) -> str:
    """A duration as people write it (no digits-and-units template)."""
    words = {1: "a day", 2: "two days", 3: "three days", 4: "four days", 5: "five days"}
    if days <= 1:
        return rng.choice(("a day", "a day or so", "about 24 hours"))
    if days <= 3:
        return rng.choice((words[days], "a couple of days", "a few days"))
    if days <= 6:
        return rng.choice((words.get(days, "a few days"), "a few days", "most of the week"))
    if days <= 9:
        return rng.choice(("about a week", "a week or so", "over a week"))
    return rng.choice(("nearly two weeks", "a week and a half", "about two weeks"))


def _listing(phrases: Sequence[str], rng: random.Random) -> str:
    items = list(phrases)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + rng.choice(_JOINERS) + items[-1]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def compose_message(record: dict, kb: Any, rng: random.Random) -> str:
    """One free-form message for `record` (see the module docstring); no checks here."""
    lays = lay_variants(kb)

    def lay(name: str) -> str:
        return rng.choice(lays.get(name.lower()) or (name,))

    symptoms = list(record["symptoms"])
    rng.shuffle(symptoms)
    first = [record["chief_complaint"]] + [s for s in symptoms if s != record["chief_complaint"]]
    n_lead = rng.choice((1, 2, 2))
    lead, rest = first[:n_lead], first[n_lead:]
    child = record["age"] < _CHILD_AGE
    subj = ("she's" if record["sex"] == "female" else "he's") if child else "I've"
    greet = rng.choice(_GREETINGS)
    opener = rng.choice(_OPENERS)
    parts = [
        opener.format(
            greet=greet,
            subj=subj,
            dur=_duration(int(record["duration_days"]), rng),
            list=_listing([lay(s) for s in lead], rng),
        )
    ]
    parts[0] = _cap(parts[0])
    if rest:
        listed = _listing([lay(s) for s in rest], rng)
        parts.append(_cap(rng.choice(_MORE).format(list=listed, List=_cap(listed))))
    extra: list[str] = []  # at most two more parts, the worry last
    if child:  # the parent says who the message is about first
        extra.append(rng.choice(_ABOUT_CHILD).format(kid=_KID[record["sex"]], age=record["age"]))
    elif rng.random() < 0.6:
        sex = rng.choice(_SEX[record["sex"]])
        extra.append(rng.choice(_ABOUT).format(age=record["age"], sex=sex))
    if record["noise_symptoms"]:
        noise = _listing([lay(s) for s in record["noise_symptoms"]], rng)
        extra.append(rng.choice(_NOISE).format(list=noise))
    parts += extra[: 3 - len(parts)]
    said = " ".join(parts)
    worries = _WORRY if _FIRST_PERSON.search(said) else _WORRY_FIRST_PERSON
    return f"{said} {rng.choice(worries)}"


class _Scripted(random.Random):
    """A Random whose `choice` follows a script of indices (then index 0), recording how many
    options each choice point had, so `training_renderings` can visit every branch."""

    def __init__(self, script: Sequence[int]) -> None:
        super().__init__(0)
        self.script, self.widths = list(script), []

    def choice(self, seq):  # type: ignore[override]
        k = len(self.widths)
        self.widths.append(len(seq))
        return seq[self.script[k] if k < len(self.script) else 0]


def training_renderings(record: dict, kb: Any, styles: Sequence[str] = STYLES) -> Iterator[str]:
    """Every input the training renderers can write for `record` in `styles` (every branch of
    their random choices), for the check that a probe message reads like none of them."""
    for style in styles:
        stack: list[list[int]] = [[]]
        while stack:
            script = stack.pop()
            rng = _Scripted(script)
            yield render_record(record, style, rng, kb=kb)
            for k in range(len(script), len(rng.widths)):  # branch on the new choice points
                for i in range(1, rng.widths[k]):
                    stack.append(script + [0] * (k - len(script)) + [i])


def word_ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


@functools.lru_cache(maxsize=8)  # KBs are immutable and hash by identity
def _phrase_ngrams(kb: Any) -> frozenset[tuple[str, ...]]:
    """N-grams inside one KB symptom phrase (a long lay phrase is the patient's own wording,
    shared by design): a shared n-gram counts only when it reaches into a renderer's frame."""
    return frozenset(
        g
        for cond in kb.conditions
        for s in cond.symptoms
        for phrase in (s.name, s.lay or "")
        for g in word_ngrams(phrase)
    )


def reads_like_training(message: str, record: dict, kb: Any) -> str | None:
    """Why `message` reads like a training input of `record` (a template phrase, or a word
    `NGRAM`-gram shared with one of its renderings that is not inside one KB symptom phrase),
    or None."""
    low = message.lower()
    for phrase in TEMPLATE_PHRASES:
        if phrase in low:
            return f"template phrase {phrase!r}"
    grams = word_ngrams(message) - _phrase_ngrams(kb)
    for text in training_renderings(record, kb):
        shared = grams & word_ngrams(text)
        if shared:
            return f"shares {' '.join(min(shared))!r} with a training rendering"
    return None


def probe_message(record: dict, kb: Any, rng: random.Random) -> str:
    """A message for `record` that names no condition of the KB's own record and reads like no
    training input (redrawn until both hold; a ValueError naming the record if none does)."""
    cond = kb.by_name(record["condition"])
    why = None
    for _ in range(_MAX_TRIES):
        message = compose_message(record, kb, rng)
        alias = kb.alias_in(message, cond.name)
        why = f"names the condition ({alias!r})" if alias else None
        why = why or reads_like_training(message, record, kb)
        if why is None:
            return message
    raise ValueError(
        f"probe record {record['id']} ({cond.name}): no acceptable message in {_MAX_TRIES}"
        f" tries; the last {why}"
    )


def probe_records(kb: Any, n: int, seed: int) -> list[dict]:
    """`n` records over the KB's conditions, as even as `n` allows (conditions in a seeded order,
    cycled), ids "p-0001"..., batch "probe", each with its `message`; deterministic in `seed`."""
    if n < 0:
        raise ValueError(f"data.probe_records must be >= 0, got {n}")
    order = list(kb.conditions)
    random.Random(f"{seed}-probe-order").shuffle(order)
    out = []
    for i in range(n):
        cond = order[i % len(order)]
        rid = f"p-{i + 1:04d}"
        rng = random.Random(seed * 1_000_003 + zlib.crc32(f"{cond.name}-{rid}".encode()))
        record = sample_record(kb, cond, rng, record_id=rid, batch="probe")
        record["message"] = probe_message(record, kb, rng)
        out.append(record)
    return out


def sentences(text: str) -> list[str]:
    """A message's sentences (split after . ? ! followed by a space or the end)."""
    return [s for s in re.split(r"(?<=[.?!])\s+", text.strip()) if s]
