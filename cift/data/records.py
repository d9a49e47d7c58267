"""Seeded, deterministic patient-record sampler with per-batch department drift.

A record is the ground truth a teacher writes a CoT answer for: findings sampled from one KB
condition (by frequency), plus a little noise borrowed from unrelated conditions. Batches emphasise
different departments (the paper's data arriving in five batches), later batches repeat earlier
conditions and contain near-duplicates of earlier *training* records (what a dynamic proxy should
learn to skip; a copy of an earlier val/test record would be a leak). Every random draw comes from
a `random.Random` seeded by a stable integer derivation, never from Python's salted `hash()`, so
the same arguments always give identical records.
"""

from __future__ import annotations

import copy
import functools
import random
import re
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from cift.kb.loader import alias_in

MIN_SYMPTOMS = 3
MAX_NOISE = 2
DEFAULT_DURATION_DAYS = (1, 14)
URGENT_DURATION_DAYS = (1, 2)
FOCUS_WEIGHT = 3.0  # a focus department's conditions are drawn this much more often


def _condition(kb: Any, condition: Any) -> Any:
    return kb.by_name(condition) if isinstance(condition, str) else condition


def _sample_by_freq(items: Sequence[Any], rng: random.Random, minimum: int) -> list[Any]:
    """Keep each item with probability `freq`; top up with the most frequent missing ones."""
    keep = {i for i, it in enumerate(items) if rng.random() < it.freq}
    missing = sorted((i for i in range(len(items)) if i not in keep), key=lambda i: -items[i].freq)
    keep.update(missing[: max(0, minimum - len(keep))])
    return [items[i] for i in sorted(keep)]  # KB order


@functools.lru_cache(maxsize=1 << 20)  # the same phrase pairs recur for every condition
def _words_overlap(a: str, b: str) -> bool:
    """True when one phrase contains the other on word boundaries (fever / high fever)."""
    a, b = a.lower(), b.lower()
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    return re.search(rf"(?<!\w){re.escape(short)}(?!\w)", long_) is not None


def noise_pool(kb: Any, condition: Any) -> list[str]:
    """Symptom names that may be borrowed as noise for `condition` (see `_noise_pool`)."""
    return list(_noise_pool(kb, _condition(kb, condition)))


@functools.lru_cache(maxsize=4096)  # KBs are immutable and hash by identity
def _noise_pool(kb: Any, cond: Any) -> tuple[str, ...]:
    """Donors are conditions that are neither the condition itself nor confusable with it (in either
    direction); a donor symptom is excluded when its name or lay phrase overlaps a symptom of the
    condition or of a confusable one, so noise never looks like evidence for a related diagnosis,
    and when its name or a lay phrase names the condition, so noise never gives the answer away.
    """
    related = [
        c
        for c in kb.conditions
        if c.name == cond.name
        or c.name.lower() in {n.lower() for n in cond.confusable_with}
        or cond.name.lower() in {n.lower() for n in c.confusable_with}
    ]
    banned = [w for c in related for s in c.symptoms for w in (s.name, s.lay) if w]
    lays: dict[str, list[str]] = {}  # a symptom renders by any condition's lay phrase for it
    for c in kb.conditions:
        for s in c.symptoms:
            lays.setdefault(s.name.lower(), []).extend([s.lay] if s.lay else [])
    pool: list[str] = []
    for donor in kb.conditions:
        if donor in related:
            continue
        for s in donor.symptoms:
            words = [w for w in (s.name, s.lay) if w]
            if s.name in pool or any(_words_overlap(w, b) for w in words for b in banned):
                continue
            if any(alias_in(w, cond) for w in (s.name, *lays[s.name.lower()])):
                continue  # "a cold sweat" as noise in a Common cold record would name it
            pool.append(s.name)
    return tuple(pool)


def _chief_complaint(cond: Any, symptoms: list[str]) -> str:
    freq = {s.name: s.freq for s in cond.symptoms}
    return max(symptoms, key=lambda name: (freq.get(name, 0.0), -symptoms.index(name)))


def sample_record(
    kb: Any, condition: Any, rng: random.Random, *, record_id: str, batch: str
) -> dict:
    """One record of `condition` (a name or a Condition) drawn with `rng` (Record schema)."""
    cond = _condition(kb, condition)
    symptoms = [s.name for s in _sample_by_freq(cond.symptoms, rng, MIN_SYMPTOMS)]
    history = [h.name for h in _sample_by_freq(cond.history, rng, 1)]
    exam = [e.name for e in _sample_by_freq(cond.exam, rng, 1)]
    tests = list(cond.tests)
    if len(tests) > 2 and rng.random() < 0.3:  # sometimes only some tests were ordered
        keep = set(rng.sample(range(len(tests)), rng.randint(2, len(tests) - 1)))
        tests = [t for i, t in enumerate(tests) if i in keep]
    pool = noise_pool(kb, cond)
    n_noise = min(rng.choice([0, 0, 1, 1, 2]), len(pool), MAX_NOISE)
    noise = rng.sample(pool, n_noise) if n_noise else []
    for findings in (symptoms, history, exam, tests):
        rng.shuffle(findings)  # patients and notes present findings in no fixed order
    lo, hi = (int(v) for v in cond.age)
    sex = cond.sex if cond.sex in ("female", "male") else rng.choice(["female", "male"])
    days = URGENT_DURATION_DAYS if cond.urgent else DEFAULT_DURATION_DAYS
    return {
        "id": record_id,
        "batch": batch,
        "condition": cond.name,
        "department": cond.department,
        "age": rng.randint(lo, hi),
        "sex": sex,
        "duration_days": rng.randint(*days),
        "chief_complaint": _chief_complaint(cond, symptoms),
        "symptoms": symptoms,
        "noise_symptoms": noise,
        "history": history,
        "exam": exam,
        "tests": [{"name": t.name, "result": t.result} for t in tests],
        "near_duplicate_of": None,
    }


def near_duplicate(
    kb: Any, record: dict, rng: random.Random, *, record_id: str, batch: str
) -> dict:
    """A copy of `record` with one or two small changes (age ±1-3, a symptom dropped, a noise
    symptom swapped); `near_duplicate_of` points at the original."""
    cond = kb.by_name(record["condition"])
    dup = copy.deepcopy(record)
    dup.update(id=record_id, batch=batch, near_duplicate_of=record["id"])
    droppable = [s for s in dup["symptoms"] if s != dup["chief_complaint"]]
    pool = [s for s in noise_pool(kb, cond) if s not in dup["noise_symptoms"]]
    changes = ["age"]
    if len(dup["symptoms"]) > MIN_SYMPTOMS and droppable:
        changes.append("drop_symptom")
    if pool:
        changes.append("swap_noise")
    for change in rng.sample(changes, min(len(changes), rng.randint(1, 2))):
        if change == "age":
            delta = rng.randint(1, 3) * rng.choice([-1, 1])
            lo, hi = (int(v) for v in cond.age)
            age = dup["age"] + delta
            dup["age"] = age if lo <= age <= hi else max(lo, min(hi, dup["age"] - delta))
        elif change == "drop_symptom":
            dup["symptoms"].remove(rng.choice(droppable))
        else:
            new = rng.choice(pool)
            if dup["noise_symptoms"]:
                dup["noise_symptoms"][rng.randrange(len(dup["noise_symptoms"]))] = new
            else:
                dup["noise_symptoms"].append(new)
    return dup


def _weights(kb: Any, focus: Sequence[str], focus_weight: float) -> list[float]:
    wanted = {d.lower() for d in focus}
    return [focus_weight if c.department.lower() in wanted else 1.0 for c in kb.conditions]


def sample_batches(
    kb: Any,
    batches: list[dict],
    records_per_batch: int,
    seed: int,
    *,
    focus_weight: float = FOCUS_WEIGHT,
    repeat_fraction: float = 0.2,
    near_duplicate_fraction: float = 0.1,
    trainable: Callable[[str, list[dict]], Iterable[dict]] | None = None,
) -> dict[str, list[dict]]:
    """Records for each batch in order: {"b1": [...], ...}.

    Batch k draws conditions with weight `focus_weight` for its focus departments and 1 otherwise.
    From the second batch on, `repeat_fraction` of its records are fresh records drawn with an
    earlier batch's focus weights (old topics keep arriving) and `near_duplicate_fraction` are
    near-duplicates of earlier batches' records. Ids are "<batch>-0001"...; order is shuffled.
    A batch's own `records` replaces `records_per_batch` for it.

    `trainable(name, records)` gives the records of a batch that go to training (its train
    split): only those are near-duplicated later, so no later batch copies an evaluation record.
    None: every record may be copied (a stream without held-out splits).
    """
    if repeat_fraction < 0 or near_duplicate_fraction < 0:
        raise ValueError("repeat_fraction and near_duplicate_fraction must be >= 0")
    if repeat_fraction + near_duplicate_fraction > 1:
        raise ValueError("repeat_fraction + near_duplicate_fraction must be <= 1")
    conditions = list(kb.conditions)
    out: dict[str, list[dict]] = {}
    earlier: list[dict] = []
    for index, spec in enumerate(batches):
        name = str(spec["name"])
        if name in out:
            raise ValueError(f"duplicate batch name {name!r}")
        rng = random.Random(seed * 1000 + index)
        size = int(spec.get("records", records_per_batch))  # a batch may arrive larger or smaller
        n_dup = round(near_duplicate_fraction * size) if earlier else 0
        n_rep = round(repeat_fraction * size) if index else 0
        n_new = size - n_dup - n_rep
        weights = _weights(kb, spec.get("focus", []), focus_weight)
        plan: list[tuple[str, Any]] = [
            ("new", c) for c in rng.choices(conditions, weights, k=n_new)
        ]
        for _ in range(n_rep):
            old = batches[rng.randrange(index)]
            old_w = _weights(kb, old.get("focus", []), focus_weight)
            plan.append(("new", rng.choices(conditions, old_w, k=1)[0]))
        plan += [("dup", rng.choice(earlier)) for _ in range(n_dup)]
        rng.shuffle(plan)
        records = []
        for i, (kind, what) in enumerate(plan):
            rid = f"{name}-{i + 1:04d}"
            if kind == "dup":
                records.append(near_duplicate(kb, what, rng, record_id=rid, batch=name))
            else:
                records.append(sample_record(kb, what, rng, record_id=rid, batch=name))
        out[name] = records
        earlier += records if trainable is None else list(trainable(name, records))
    return out


def sample_global_test(kb: Any, per_condition: int, seed: int) -> list[dict]:
    """A balanced held-out set over every condition: batch "global", ids "g-0001"...

    Each condition's records come from its own rng (seed and a CRC of its name), so adding a
    condition to the KB does not change the other conditions' records.
    """
    counts = {cond.name: per_condition for cond in kb.conditions}
    return sample_held_out(kb, counts, seed, batch="global", prefix="g")


def sample_held_out(
    kb: Any, counts: Mapping[str, int], seed: int, *, batch: str, prefix: str
) -> list[dict]:
    """`counts[name]` records of each named condition, in KB order: ids "<prefix>-0001"...

    Each condition's records come from its own rng (seed and a CRC of its name), as in
    `sample_global_test`."""
    records = []
    for cond in kb.conditions:
        rng = random.Random(seed * 1_000_003 + zlib.crc32(cond.name.encode("utf-8")))
        for _ in range(counts.get(cond.name, 0)):
            rid = f"{prefix}-{len(records) + 1:04d}"
            records.append(sample_record(kb, cond, rng, record_id=rid, batch=batch))
    return records


def batch_conditions(
    kb: Any, spec: Mapping[str, Any], n: int, seed: int, *, focus_weight: float = FOCUS_WEIGHT
) -> list[str]:
    """`n` condition names drawn as a batch's fresh records draw them (`spec`'s focus
    departments weighted `focus_weight`, see `sample_batches`): a test set from that batch's
    distribution."""
    rng = random.Random(f"{seed}-{spec['name']}-conditions")
    weights = _weights(kb, spec.get("focus", []), focus_weight)
    return [c.name for c in rng.choices(list(kb.conditions), weights, k=n)]
