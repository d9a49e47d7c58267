"""The probe set: patients' own words over the run's conditions, unlike every training input,
never naming the answer, kept apart from training, scorable by `cift eval-file` (no model)."""

from __future__ import annotations

import random
import re

import pytest

from cift.config import domain_kb
from cift.data.probe import (
    FRAMES,
    NGRAM,
    TEMPLATE_PHRASES,
    _phrase_ngrams,
    compose_message,
    probe_records,
    reads_like_training,
    sentences,
    training_renderings,
    word_ngrams,
)
from cift.data.records import sample_record
from cift.data.render import CASE_INSTRUCTION, render_record
from cift.data.splits import contamination_filter
from cift.evaluate.eval_file import usable_cases
from cift.generate.batches import Contamination
from cift.generate.inmemory import synthetic_splits
from cift.generate.probe import probe_set
from cift.io.jsonl import read_samples, write_jsonl_atomic
from cift.kb import load_kb
from tests.conftest import bag_embed, compose

FIRST_PERSON = re.compile(r"\b(I|I'm|I've|I'd|my|me)\b")
HEADING = re.compile(r"(^|[.?!]\s+|\n)\s*[A-Za-z][\w /-]{0,30}:")


@pytest.fixture(scope="module")
def kb():
    return load_kb()


@pytest.fixture(scope="module")
def probes(kb):
    return probe_records(kb, 120, seed=0)


def test_probes_cover_the_conditions_evenly_and_are_deterministic(kb, probes):
    assert len(probes) == 120 and [p["id"] for p in probes[:2]] == ["p-0001", "p-0002"]
    counts = {name: sum(p["condition"] == name for p in probes) for name in kb.names}
    assert set(counts.values()) == {1, 2}  # 120 over 75 conditions: every one, as even as can be
    again = probe_records(kb, 120, seed=0)
    assert [p["message"] for p in again] == [p["message"] for p in probes]
    other = probe_records(kb, 120, seed=1)
    assert sum(a["message"] != b["message"] for a, b in zip(other, probes, strict=True)) > 100
    # a prefix of a bigger set is the smaller set (the stage draws more in rounds)
    assert [p["message"] for p in probe_records(kb, 10, seed=0)] == [
        p["message"] for p in probes[:10]
    ]


def test_a_probe_is_a_short_first_person_message_without_headings(probes):
    lengths = set()
    for p in probes:
        text = p["message"]
        assert "\n" not in text and not HEADING.search(text), text
        assert FIRST_PERSON.search(text), text
        n = len(sentences(text))
        assert 1 <= n <= 4, text
        lengths.add(n)
        low = text.lower()
        assert not [t for t in TEMPLATE_PHRASES if t in low], text
        assert not re.search(r"\d+[- ]year[- ]old|\d+ days?\b", low), text  # renderer wording
    assert len(lengths) >= 2  # not one fixed shape
    openings = {" ".join(p["message"].split()[:2]) for p in probes}
    assert len(openings) >= 20


def test_no_probe_names_its_condition(kb, probes):
    for p in probes:
        assert kb.alias_in(p["message"], p["condition"]) is None, p["message"]


def test_no_frame_word_names_any_condition(kb):
    for frame in FRAMES:
        text = re.sub(r"\{\w+\}", " ", frame)
        assert not [c.name for c in kb.conditions if kb.alias_in(text, c.name)], frame


def test_no_probe_shares_a_long_ngram_with_a_training_rendering_of_its_record(kb, probes):
    phrases = _phrase_ngrams(kb)
    for p in probes:
        grams = word_ngrams(p["message"], NGRAM) - phrases
        for text in training_renderings(p, kb):
            assert not grams & word_ngrams(text, NGRAM), (p["message"], text)


def test_training_renderings_visit_every_branch_and_the_check_catches_them(kb):
    rec = sample_record(kb, "Influenza", random.Random(3), record_id="x-1", batch="b1")
    texts = set(training_renderings(rec, kb))
    for style in ("note", "lay", "dialogue"):
        for seed in range(40):  # whatever the seed, the rendering is one of the enumerated
            assert render_record(rec, style, random.Random(seed), kb=kb) in texts
    # note: 3 connectors when there are other symptoms; lay: 2 openers x 3; dialogue: 2 openers
    assert len(texts) == 3 + 6 + 2
    for text in texts:
        assert reads_like_training(text, rec, kb) is not None
    # a message that copies a frame of the lay renderer is caught too
    lay = next(t for t in texts if t.startswith("Hello doctor"))
    assert reads_like_training(lay.split(". ", 1)[1], rec, kb) is not None


def test_messages_vary_their_wording_of_one_record(kb):
    rec = sample_record(kb, "Migraine", random.Random(5), record_id="x-2", batch="b1")
    rng = random.Random(0)
    assert len({compose_message(rec, kb, rng) for _ in range(30)}) >= 25


@pytest.fixture(scope="module")
def tiny():
    cfg = compose(["profile=tiny"])
    kb = domain_kb(cfg)
    check = Contamination(cfg, kb, embed_fn=bag_embed)
    return cfg, kb, check


def test_probe_set_is_reference_samples_over_the_run_conditions(tiny):
    cfg, kb, check = tiny
    probe = probe_set(cfg, kb, check)
    samples = probe["samples"]
    assert len(samples) == cfg.data.probe_records == 8
    assert [s["id"] for s in samples] == [f"p-{i:04d}" for i in range(1, 9)]
    for s in samples:
        assert set(s) == {"id", "instruction", "input", "output", "meta", "gold"}
        assert s["instruction"] == CASE_INSTRUCTION and s["gold"] == s["meta"]["condition"]
        assert s["gold"] in kb.names and s["meta"]["style"] == "probe"
        assert "Diagnosis:" in s["output"]
    assert len({s["gold"] for s in samples}) == 8  # 8 conditions in tiny, one probe each
    assert [e["text"] for e in probe["heldout"]] == [s["input"] for s in samples]
    assert {e["split"] for e in probe["heldout"]} == {"probe"}


def test_probe_set_is_kept_apart_from_training(tiny):
    cfg, kb, check = tiny
    result = synthetic_splits(cfg, kb, check)
    entries = [e for e in result["heldout"] if e["split"] == "probe"]
    assert len(entries) == cfg.data.probe_records  # the probes join the held-out chain
    train = [r for b in result["batches"].values() for r in b["train"]]
    rule = cfg.data.contamination
    # no training record of any batch near-duplicates a probe message (the rule's own test)
    probes = [{"id": e["id"], "message": e["text"]} for e in entries]
    _, dropped, _ = contamination_filter(
        train,
        probes,
        texts_fn=lambda r: r.get("message") or check.text(r),
        embed_fn=check.embed,
        cosine=rule.cosine,
        ngram=rule.ngram,
        ngram_overlap=rule.ngram_overlap,
    )
    assert dropped == []
    # and the chain drops a training candidate that copies a probe's message
    cand = {**train[0], "id": "copy"}
    kept, cross = check.training([cand], entries, text_fn=lambda r: entries[0]["text"])
    assert kept == [] and cross[0]["eval_split"] == "probe"


def test_cift_eval_file_reads_the_probe_file_as_written(tiny, tmp_path):
    cfg, kb, check = tiny
    samples = probe_set(cfg, kb, check)["samples"]
    path = tmp_path / "probe.jsonl"
    write_jsonl_atomic(path, samples)
    read = read_samples(path)  # a well-formed sample file too
    assert len(read.accepted) == len(samples) and not read.rejects
    cases, counts = usable_cases(path, "input", "gold", kb)
    assert counts["rejected"] == counts["unresolved_labels"] == 0
    # the same ids, prompt and gold as the continual stage scores (answers are shared)
    assert [(c["id"], c["instruction"], c["input"], c["gold"]) for c in cases] == [
        (s["id"], s["instruction"], s["input"], s["gold"]) for s in samples
    ]
