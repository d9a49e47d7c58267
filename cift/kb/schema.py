"""Typed, immutable records for one knowledge-base condition.

The knowledge base is loaded once and shared (cached) by every stage, so every field is a frozen
dataclass or a tuple: no caller can mutate the shared copy under another caller's feet.
"""

from __future__ import annotations

from dataclasses import dataclass

# Allowed `department` values (validated by the loader); a new domain extends this set.
DEPARTMENTS: frozenset[str] = frozenset(
    {
        "respiratory",
        "cardiovascular",
        "digestive",
        "infectious",
        "skin",
        "neuro_musculoskeletal",
        "endocrine_renal",
        "ent",
        "eye",
        "mental_health",
        "womens_health",
        "haematology",
        "other",
    }
)
SEXES: frozenset[str] = frozenset({"any", "female", "male"})


@dataclass(frozen=True)
class Finding:
    """A symptom, history item or exam finding; `freq` is how often it occurs with the condition.

    `lay` is the patient's wording (symptoms only; None for history and exam findings).
    """

    name: str
    lay: str | None
    freq: float


@dataclass(frozen=True)
class Test:
    """An auxiliary test and the result it typically shows for the condition."""

    name: str
    result: str


@dataclass(frozen=True)
class Condition:
    """One diagnosis with everything needed to sample a record and to write a reference answer."""

    name: str
    synonyms: tuple[str, ...]
    department: str
    age: tuple[int, int]
    sex: str
    symptoms: tuple[Finding, ...]
    history: tuple[Finding, ...]
    exam: tuple[Finding, ...]
    tests: tuple[Test, ...]
    distinguishing: tuple[str, ...]
    red_flags: tuple[str, ...]
    urgent: bool
    advice: tuple[str, ...]
    confusable_with: tuple[str, ...]

    @property
    def symptom_names(self) -> tuple[str, ...]:
        """Clinical symptom names, in KB order."""
        return tuple(s.name for s in self.symptoms)
