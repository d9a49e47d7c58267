"""Leak-free evaluation on the profiles' own records (no model: the record sampler and the rule).

Later training never near-duplicates an earlier evaluation record (the generator's
`near_duplicate_of` link, and the contamination rule), no evaluation input names its gold
condition, and the small profile's validation splits are big enough for the gate to decide.
"""

from __future__ import annotations

import pytest

from cift.config import domain_kb
from cift.data.splits import contamination_filter, minilm_embedder
from cift.generate.batches import Contamination, record_text, reference_sample
from cift.generate.inmemory import synthetic_splits
from tests.conftest import bag_embed, compose


def _close_pairs(cfg, kb, train: list[dict], evals: list[dict], embed_fn) -> list[dict]:
    """Evaluation records the contamination rule finds close to a training record."""
    rule = cfg.data.contamination
    _, dropped, _ = contamination_filter(
        train,
        evals,
        texts_fn=lambda r: record_text(r, kb, cfg),
        embed_fn=embed_fn,
        cosine=rule.cosine,
        ngram=rule.ngram,
        ngram_overlap=rule.ngram_overlap,
    )
    return dropped


def _splits(profile: str, embed_fn=None) -> tuple:
    cfg = compose([f"profile={profile}"])
    kb = domain_kb(cfg)
    return cfg, kb, synthetic_splits(cfg, kb, Contamination(cfg, kb, embed_fn=embed_fn))


@pytest.fixture(scope="module")
def small():
    return _splits("small", bag_embed)


@pytest.fixture(scope="module")
def tiny():
    return _splits("tiny", bag_embed)


def _earlier_eval(result: dict, name: str) -> list[dict]:
    """The global and Table 1 test sets and every val/test record of the batches before `name`."""
    names = list(result["batches"])
    return (
        list(result["global_test"])
        + list(result["table1_test"])
        + [
            r
            for earlier in names[: names.index(name)]
            for side in ("val", "test")
            for r in result["batches"][earlier][side]
        ]
    )


def _assert_no_cross_batch_leak(cfg, kb, result, embed_fn) -> None:
    names = list(result["batches"])
    assert len(names) >= 2
    for name in names[1:]:
        train = result["batches"][name]["train"]
        evals = _earlier_eval(result, name)
        eval_ids = {r["id"] for r in evals}
        assert train and evals
        # by the generator's link: no copy of an earlier evaluation record is trained on
        assert not [r["id"] for r in train if r["near_duplicate_of"] in eval_ids]
        # by the rule: no earlier evaluation record is close to this batch's training
        dropped = _close_pairs(cfg, kb, train, evals, embed_fn)
        assert dropped == [], [(d["train_id"], d["record"]["id"], d["reason"]) for d in dropped]


def test_no_later_training_copies_earlier_evaluation_small(small):
    cfg, kb, result = small
    # the stream still plants near-duplicates of earlier training records
    dups = [r for b in result["batches"].values() for r in b["train"] if r["near_duplicate_of"]]
    assert dups
    _assert_no_cross_batch_leak(cfg, kb, result, bag_embed)


def test_cross_batch_drops_are_reported(small):
    _, _, result = small
    for split in result["batches"].values():
        c = split["contamination"]
        kept = {r["id"] for r in split["train"]}
        for d in c["cross_batch"]:
            assert d["record"]["id"] not in kept
            assert d["eval_batch"] and d["eval_id"] and d["reason"]
        assert 0.0 <= c["cross_batch_rate"] <= 1.0


def test_no_later_training_copies_earlier_evaluation_tiny(tiny):
    cfg, kb, result = tiny
    _assert_no_cross_batch_leak(cfg, kb, result, bag_embed)


@pytest.mark.slow
def test_no_cross_batch_leak_by_the_minilm_rule_small():
    cfg = compose(["profile=small"])
    kb = domain_kb(cfg)
    # one MiniLM embedder for the generation and the check: the check's record texts are the
    # ones generation embedded, so its vectors come from the same (memoised) encoder pass
    check = Contamination(cfg, kb, embed_fn=minilm_embedder())
    result = synthetic_splits(cfg, kb, check)
    _assert_no_cross_batch_leak(cfg, kb, result, check.embed)


@pytest.mark.parametrize("profile", ["small", "tiny"])
def test_table1_test_set_is_batch_one_distribution_and_leak_free(profile, small, tiny):
    """Table 1's test set: the configured size, ids of its own, the first batch's focus
    departments over-represented as in its records, no record close to any batch's training,
    and in the held-out chain the first batch's training is checked against."""
    cfg, kb, result = small if profile == "small" else tiny
    test = result["table1_test"]
    assert len(test) == cfg.data.table1_test_records
    assert all(r["id"].startswith("t1-") for r in test)
    assert not {r["id"] for r in test} & {r["id"] for r in result["global_test"]}
    focus = set(cfg.data.batches[0].focus)
    in_kb = sum(c.department in focus for c in kb.conditions) / len(kb.conditions)
    in_test = sum(r["department"] in focus for r in test) / len(test)
    in_first = [r["department"] in focus for r in result["batches"]["b1"]["train"]]
    assert in_test >= in_kb and abs(in_test - sum(in_first) / len(in_first)) < 0.25
    train = [r for split in result["batches"].values() for r in split["train"]]
    assert _close_pairs(cfg, kb, train, test, bag_embed) == []
    chained = {e["id"] for e in result["heldout"] if e["split"] == "table1_test"}
    assert chained == {r["id"] for r in test}


def test_small_validation_splits_decide(small):
    cfg, _, result = small
    assert cfg.data.min_val_records >= 20
    for name, split in result["batches"].items():
        assert len(split["val"]) >= 20, name
        assert len(split["test"]) >= cfg.data.min_test_records, name
        assert not {r["id"] for r in split["train"]} & {r["id"] for r in split["val"]}


@pytest.mark.parametrize("profile", ["small", "tiny"])
def test_evaluation_inputs_never_name_the_gold_condition(profile, small, tiny):
    cfg, kb, result = small if profile == "small" else tiny
    evals = (
        list(result["global_test"])
        + list(result["table1_test"])
        + [
            r
            for split in result["batches"].values()
            for side in ("val", "test")
            for r in split[side]
        ]
    )
    assert len(evals) > len(result["global_test"])
    named = []
    for record in evals:
        text = reference_sample(record, kb, cfg)["input"]
        alias = kb.alias_in(text, record["condition"])
        if alias is not None:
            named.append((record["id"], record["condition"], alias))
    assert named == []


def test_renderer_adds_no_condition_name():
    """The renderer's own words (instructions, templates) name no condition: what a rendering
    names comes from the record's findings, which the KB check keeps free of their label."""
    import random

    from cift.data.render import _INSTRUCTIONS, STYLES, render_record
    from cift.kb import load_kb

    kb = load_kb()
    placeholder = {
        "age": 40,
        "sex": "female",
        "duration_days": 3,
        "chief_complaint": "zzz",
        "symptoms": ["zzz", "yyy"],
        "noise_symptoms": ["www"],
        "history": ["hhh"],
        "exam": ["eee"],
        "tests": [{"name": "ttt", "result": "rrr"}],
    }
    texts = [t for group in _INSTRUCTIONS.values() for t in group]
    texts += [
        render_record(placeholder, style, random.Random(seed), kb=kb)
        for style in STYLES
        for seed in range(20)
    ]
    named = {(c.name, a) for c in kb.conditions for t in texts if (a := kb.alias_in(t, c.name))}
    assert named == set()
