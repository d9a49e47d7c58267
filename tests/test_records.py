"""Record sampler, renderings, splits and the contamination filter (fast; one slow MiniLM test)."""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cift.data.records import noise_pool, sample_batches, sample_global_test, sample_record
from cift.data.render import STYLES, instruction_for, lay_phrases, render_record
from cift.data.splits import (
    contamination_filter,
    minilm_embedder,
    split_by_record,
    training_contamination,
)
from cift.data.validity import faithfulness_violations
from cift.kb import load_kb

KB_PATH = Path(__file__).parent / "fixtures" / "kb_small.yaml"
BATCHES = [
    {"name": "b1", "focus": ["respiratory"]},
    {"name": "b2", "focus": ["cardiovascular", "skin"]},
    {"name": "b3", "focus": ["digestive"]},
]


@pytest.fixture(scope="module")
def kb():
    return load_kb(KB_PATH)


@pytest.fixture(scope="module")
def batches(kb):
    return sample_batches(kb, BATCHES, 300, seed=11)


def test_record_schema_and_rules(kb):
    rng = random.Random(0)
    for i in range(200):
        cond = kb.conditions[i % len(kb.conditions)]
        r = sample_record(kb, cond.name, rng, record_id=f"x-{i}", batch="x")
        assert r["condition"] == cond.name and r["department"] == cond.department
        assert len(r["symptoms"]) >= 3 and set(r["symptoms"]) <= set(cond.symptom_names)
        assert 0 <= len(r["noise_symptoms"]) <= 2
        assert set(r["noise_symptoms"]) <= set(noise_pool(kb, cond))
        assert not set(r["noise_symptoms"]) & set(cond.symptom_names)
        assert r["history"] and r["exam"] and len(r["tests"]) >= 2
        assert cond.age[0] <= r["age"] <= cond.age[1]
        assert r["sex"] in ("female", "male") and r["duration_days"] >= 1
        freq = {s.name: s.freq for s in cond.symptoms}
        assert freq[r["chief_complaint"]] == max(freq[s] for s in r["symptoms"])
        assert r["near_duplicate_of"] is None


def test_noise_never_from_confusable_conditions(kb):
    flu = kb.by_name("Influenza")
    banned = {
        s
        for c in ("Common cold", "COVID-19", "Gastroenteritis")
        for s in kb.by_name(c).symptom_names
    }  # Gastroenteritis lists Influenza as confusable
    assert not banned & set(noise_pool(kb, flu))


def test_batches_deterministic(kb, batches):
    again = sample_batches(kb, BATCHES, 300, seed=11)
    assert again == batches
    other = sample_batches(kb, BATCHES, 300, seed=12)
    assert other != batches
    assert sample_global_test(kb, 3, 5) == sample_global_test(kb, 3, 5)


def test_ids_and_sizes(batches):
    assert list(batches) == ["b1", "b2", "b3"]
    for name, records in batches.items():
        assert len(records) == 300
        assert [r["id"] for r in records] == [f"{name}-{i:04d}" for i in range(1, 301)]
        assert {r["batch"] for r in records} == {name}


def test_a_batch_may_arrive_with_its_own_size(kb, batches):
    """`records` on a batch replaces records_per_batch for it; the other batches are unchanged."""
    sized = sample_batches(kb, [BATCHES[0] | {"records": 120}, *BATCHES[1:]], 300, seed=11)
    assert [len(r) for r in sized.values()] == [120, 300, 300]
    assert sized["b1"] == sample_batches(kb, [BATCHES[0]], 120, seed=11)["b1"]
    assert sized["b2"] != batches["b2"]  # near-duplicates copy b1's records, which differ


def _share(records, departments):
    fresh = [r for r in records if r["near_duplicate_of"] is None]
    return sum(r["department"] in departments for r in fresh) / len(fresh)


def test_drift_focus_over_represented(kb, batches):
    for spec in BATCHES:
        own = _share(batches[spec["name"]], spec["focus"])
        n_focus = sum(c.department in spec["focus"] for c in kb.conditions)
        assert own > 1.5 * n_focus / len(kb.conditions)
        for other in BATCHES:
            if other is not spec:
                assert own > _share(batches[other["name"]], spec["focus"]) + 0.1


def test_near_duplicates_in_later_batches(batches):
    assert all(r["near_duplicate_of"] is None for r in batches["b1"])
    by_id = {r["id"]: r for records in batches.values() for r in records}
    for name in ("b2", "b3"):
        dups = [r for r in batches[name] if r["near_duplicate_of"]]
        assert len(dups) == 30
        for d in dups:
            orig = by_id[d["near_duplicate_of"]]
            assert orig["batch"] < name  # always an earlier batch
            assert d["condition"] == orig["condition"]
            changed = [k for k in ("age", "symptoms", "noise_symptoms") if d[k] != orig[k]]
            assert 1 <= len(changed) <= 2
            assert abs(d["age"] - orig["age"]) <= 3
            assert len(set(orig["symptoms"]) - set(d["symptoms"])) <= 1


def test_global_test_balanced(kb):
    records = sample_global_test(kb, 4, seed=1)
    assert [r["id"] for r in records[:2]] == ["g-0001", "g-0002"]
    assert {r["batch"] for r in records} == {"global"}
    assert Counter(r["condition"] for r in records) == dict.fromkeys(kb.names, 4)


@pytest.mark.parametrize("style", STYLES)
def test_every_rendering_contains_every_finding(kb, batches, style):
    lays = lay_phrases(kb)
    for i, r in enumerate(batches["b2"][:150]):
        text = render_record(r, style, random.Random(i), kb=kb).lower()
        for s in r["symptoms"] + r["noise_symptoms"]:
            assert s.lower() in text or lays[s.lower()].lower() in text, (s, text)
        for item in r["history"] + r["exam"]:
            assert item.lower() in text
        for t in r["tests"]:
            assert t["name"].lower() in text and t["result"].lower() in text
        assert str(r["age"]) in text
        # nothing absent from the record: no KB finding term the record lacks
        assert faithfulness_violations([text], r, kb) == []


def test_render_rejects_unknown_style(kb, batches):
    with pytest.raises(ValueError, match="unknown style"):
        render_record(batches["b1"][0], "poem", random.Random(0), kb=kb)
    assert len({instruction_for("note", random.Random(i)) for i in range(30)}) > 2


def test_split_by_record_fractions_and_grouping():
    records = [{"id": f"r{i:03d}"} for i in range(200)]
    samples = [{"id": f"s{i}", "meta": {"record_id": r["id"]}} for r in records for i in range(3)]
    split = split_by_record(samples, (0.8, 0.1, 0.1), seed=3)
    sizes = {k: len({s["meta"]["record_id"] for s in v}) for k, v in split.items()}
    assert sizes == {"train": 160, "val": 20, "test": 20}
    sides = [{s["meta"]["record_id"] for s in v} for v in split.values()]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert split == split_by_record(samples, (0.8, 0.1, 0.1), seed=3)
    assert split != split_by_record(samples, (0.8, 0.1, 0.1), seed=4)
    small = split_by_record(records[:5], (1.0, 0.0, 0.0), seed=0, min_test=1, min_val=1)
    assert [len(small[k]) for k in ("train", "val", "test")] == [3, 1, 1]
    with pytest.raises(ValueError):
        split_by_record(records, (0.5, 0.1, 0.1), seed=0)


def test_split_by_record_keeps_near_copies_in_train():
    """A near-copy of an earlier training record would be a leak in val/test: it stays in train."""
    records = [{"id": f"r{i:03d}", "near_duplicate_of": "x" if i % 2 else None} for i in range(40)]
    copy = lambda r: bool(r["near_duplicate_of"])  # noqa: E731
    split = split_by_record(records, (0.5, 0.25, 0.25), seed=1, train_only=copy)
    assert all(not copy(r) for side in ("val", "test") for r in split[side])
    assert [len(split[k]) for k in ("train", "val", "test")] == [20, 10, 10]
    with pytest.raises(ValueError, match="too few"):
        split_by_record(records, (0.2, 0.4, 0.4), seed=1, train_only=copy)


def _bag_embed(texts: list[str]) -> np.ndarray:
    """A fake embed_fn: normalised bag of hashed words (deterministic, no model)."""
    out = np.zeros((len(texts), 256), dtype=np.float32)
    for i, text in enumerate(texts):
        for w in re.findall(r"\w+", text.lower()):
            out[i, sum(map(ord, w)) % 256] += 1
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def _contamination_case(kb, batches):
    held_out = ("Atopic dermatitis", "Gastroenteritis")
    train = [r for r in batches["b1"] if r["condition"] not in held_out][:40]
    clean = [r for r in batches["b3"] if r["condition"] in held_out][:5]
    exact = dict(train[0], id="t-exact")
    near = dict(train[1], id="t-near", age=train[1]["age"] + 1)
    texts = {}

    def texts_fn(r):
        if r["id"] not in texts:
            texts[r["id"]] = render_record(r, "note", random.Random(0), kb=kb)
        return texts[r["id"]]

    return train, [exact, near, *clean], texts_fn


def test_contamination_filter_drops_exact_and_near(kb, batches):
    train, evals, texts_fn = _contamination_case(kb, batches)
    kept, dropped, rate = contamination_filter(train, evals, texts_fn=texts_fn)
    assert {d["record"]["id"] for d in dropped} == {"t-exact", "t-near"}
    assert {d["reason"] for d in dropped} == {"ngram_overlap"}
    assert {d["train_id"] for d in dropped} == {train[0]["id"], train[1]["id"]}
    assert rate == pytest.approx(2 / len(evals)) and len(kept) == len(evals) - 2
    # a paraphrase with few shared 8-grams is caught only by the embedding
    para = dict(evals[-1], id="t-para")
    para_text = " ".join(reversed(texts_fn(train[2]).split()))
    texts_fn2 = lambda r: para_text if r["id"] == "t-para" else texts_fn(r)  # noqa: E731
    _, dropped, _ = contamination_filter(train, [para], texts_fn=texts_fn2, embed_fn=_bag_embed)
    assert [d["reason"] for d in dropped] == ["embedding_cosine"]
    _, dropped, rate = contamination_filter(train, [para], texts_fn=texts_fn2)
    assert dropped == [] and rate == 0.0


@pytest.mark.slow
def test_contamination_filter_real_minilm(kb, batches):
    train, evals, texts_fn = _contamination_case(kb, batches)
    embed = minilm_embedder()
    vecs = embed([texts_fn(r) for r in evals])
    assert vecs.shape == (len(evals), 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    _, dropped, rate = contamination_filter(
        train, evals, texts_fn=texts_fn, embed_fn=embed, ngram_overlap=1.01
    )  # n-grams off: the embedding alone must catch the exact and the near copy
    assert {"t-exact", "t-near"} <= {d["record"]["id"] for d in dropped}
    assert rate == len(dropped) / len(evals)


def test_near_duplicates_copy_only_training_records(kb):
    def train_of(name, records):
        return split_by_record(records, seed=name)["train"]

    out = sample_batches(kb, BATCHES, 300, seed=11, trainable=train_of)
    trainable = {r["id"] for name, recs in out.items() for r in train_of(name, recs)}
    dups = [r for recs in out.values() for r in recs if r["near_duplicate_of"]]
    assert len(dups) == 60
    assert all(d["near_duplicate_of"] in trainable for d in dups)


def test_noise_never_names_the_record_condition(kb):
    cold = kb.by_name("Common cold")
    # "breaking out in a cold sweat" (diaphoresis) would name the common cold in its record
    assert "diaphoresis" not in noise_pool(kb, cold)
    assert all(kb.alias_in(s, cold.name) is None for s in noise_pool(kb, cold))


def test_training_contamination_drops_candidates_close_to_heldout(kb, batches):
    train, _, texts_fn = _contamination_case(kb, batches)
    # the exact and the near copy are now held out; the training candidates copying them go
    held = [texts_fn(train[0]), texts_fn(train[1])]
    kept, dropped = training_contamination(train, held, ["e-0", "e-1"], texts_fn=texts_fn)
    assert {(d["record"]["id"], d["eval_id"]) for d in dropped} == {
        (train[0]["id"], "e-0"),
        (train[1]["id"], "e-1"),
    }
    assert {d["reason"] for d in dropped} == {"ngram_overlap"}
    assert len(kept) == len(train) - 2
    # what is kept passes the rule in its usual direction
    evals_held = [dict(train[0], id="e-0"), dict(train[1], id="e-1")]
    _, again, _ = contamination_filter(kept, evals_held, texts_fn=texts_fn)
    assert again == []
    with pytest.raises(ValueError, match="held-out texts"):
        training_contamination(train, held, ["e-0"], texts_fn=texts_fn)
    assert training_contamination(train, [], [], texts_fn=texts_fn) == (train, [])
