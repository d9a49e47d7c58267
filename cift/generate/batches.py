"""From the run config to one batch's records, splits and samples (the generate stage's library).

Records are sampled in memory, deterministically, for every synthetic batch up to the one asked
for, so each batch's stage is self-contained yet near-duplicates of earlier batches are real.
"""

from __future__ import annotations

import random
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cift.config import domain_kb
from cift.data.records import sample_batches, sample_global_test
from cift.data.redact import redact_sample
from cift.data.reference import reference_answer
from cift.data.sample import record_sample, sample_task
from cift.data.splits import contamination_filter, minilm_embedder, split_by_record
from cift.kb import KnowledgeBase


def synthetic_records(cfg: DictConfig, kb: KnowledgeBase) -> dict[str, list[dict]]:
    """Records of every synthetic batch, in config order (imported batches bring their own)."""
    specs = [
        OmegaConf.to_container(b, resolve=True) for b in cfg.data.batches if b.source == "synthetic"
    ]
    return sample_batches(
        kb,
        specs,
        cfg.data.records_per_batch,
        cfg.seed,
        repeat_fraction=cfg.data.repeat_fraction,
        near_duplicate_fraction=cfg.data.near_duplicate_fraction,
    )


def record_text(record: dict, kb: KnowledgeBase, cfg: DictConfig) -> str:
    """The input text a record becomes (what a model would see), for near-duplicate checks."""
    return sample_task(record, kb, list(cfg.data.styles), cfg.seed)["input"]


def _split(cfg: DictConfig, records: list[dict], salt: str) -> dict[str, list[dict]]:
    return split_by_record(
        records,
        fractions=tuple(cfg.data.fractions),
        seed=f"{cfg.seed}-{salt}",
        min_test=cfg.data.min_test_records,
    )


def batch_splits(cfg: DictConfig, kb: KnowledgeBase, name: str) -> dict:
    """train/val/test records of one synthetic batch.

    Evaluation records that near-duplicate any training record (of this or an earlier batch)
    are dropped; the test split is then topped up to `data.min_test_records` with training
    records that near-duplicate no remaining training record. `contamination` says what was
    dropped and why, and the rate over every evaluation candidate examined.
    """
    all_records = synthetic_records(cfg, kb)
    earlier_train: list[dict] = []
    for batch, records in all_records.items():
        split = _split(cfg, records, batch)
        if batch == name:
            break
        earlier_train += split["train"]
    else:
        raise KeyError(f"params.yaml: data.batches: {name!r} is not a synthetic batch")
    check = _contamination_check(cfg, kb)
    train = list(split["train"])
    kept, dropped = check(earlier_train + train, split["val"] + split["test"])
    keep = {r["id"] for r in kept}
    val = [r for r in split["val"] if r["id"] in keep]
    test = [r for r in split["test"] if r["id"] in keep]
    examined = len(split["val"]) + len(split["test"])
    candidates = list(train)
    random.Random(f"{cfg.seed}-{name}-top-up").shuffle(candidates)
    while len(test) < cfg.data.min_test_records and candidates:
        cand = candidates.pop()
        rest = [r for r in train if r is not cand]
        ok, bad = check(earlier_train + rest, [cand])
        examined += 1
        dropped += bad  # a near-duplicate stays in train, where it does no harm
        if ok:
            train, test = rest, [*test, cand]
    return {
        "train": train,
        "val": val,
        "test": test,
        "contamination": {"dropped": dropped, "rate": len(dropped) / max(examined, 1)},
    }


def global_test(cfg: DictConfig, kb: KnowledgeBase) -> dict:
    """The fixed global test set: `data.global_test_per_condition` records of every condition
    that near-duplicate no batch's training record (candidates drawn in growing rounds)."""
    per = cfg.data.global_test_per_condition
    train = [
        r
        for batch, recs in synthetic_records(cfg, kb).items()
        for r in _split(cfg, recs, batch)["train"]
    ]
    check = _contamination_check(cfg, kb)
    chosen: dict[str, list[dict]] = {name: [] for name in kb.names}
    dropped: list[dict] = []
    examined = 0
    for round_ in range(4):  # 4x, then 8x, 16x, 32x candidates for the conditions still short
        short = kb.subset([n for n, got in chosen.items() if len(got) < per])
        if not short.names:
            break
        candidates = sample_global_test(short, per * 4 << round_, cfg.seed + round_)
        kept, bad = check(train, candidates)
        examined, dropped = examined + len(candidates), dropped + bad
        for r in kept:
            if len(chosen[r["condition"]]) < per:
                chosen[r["condition"]].append(r)
    test = [r for name in kb.names for r in chosen[name]]
    for i, r in enumerate(test):  # ids say nothing about the round a record came from
        r["id"] = f"g-{i + 1:04d}"
    return {"test": test, "contamination": {"dropped": dropped, "rate": len(dropped) / examined}}


def _contamination_check(cfg: DictConfig, kb: KnowledgeBase):
    """check(train, evals) -> (kept, dropped), embeddings memoised across calls."""
    c = cfg.data.contamination
    embed = minilm_embedder()
    memo: dict[str, object] = {}

    def cached_embed(texts: list[str]):
        import numpy as np

        missing = [t for t in dict.fromkeys(texts) if t not in memo]
        if missing:
            memo.update(zip(missing, embed(missing), strict=True))
        return np.stack([memo[t] for t in texts])

    def check(train: list[dict], evals: list[dict]) -> tuple[list[dict], list[dict]]:
        kept, dropped, _ = contamination_filter(
            train,
            evals,
            texts_fn=lambda r: record_text(r, kb, cfg),
            embed_fn=cached_embed,
            cosine=c.cosine,
            ngram=c.ngram,
            ngram_overlap=c.ngram_overlap,
        )
        return kept, dropped

    return check


def reference_sample(record: dict, kb: KnowledgeBase, cfg: DictConfig) -> dict:
    """An expert answer built from the KB in code: what evaluation compares against."""
    task = sample_task(record, kb, list(cfg.data.styles), cfg.seed)
    structured = reference_answer(kb, record)
    return record_sample(
        record,
        task,
        structured,
        sample_id=f"{record['id']}-ref",
        source="reference",
        teacher="kb_reference",
    )


def redacted(samples: list[dict]) -> list[dict]:
    """Every sample through PII redaction; what changed is recorded in `meta.redaction`."""
    return [redact_sample(sample)[0] for sample in samples]


def synthetic_batch(cfg: DictConfig, name: str) -> dict:
    """records, train (teacher CoT), val/test (KB references), rejects and metrics of a batch."""
    from cift.generate.cot import GenerationSettings, generate_cot

    kb = domain_kb(cfg)
    splits = batch_splits(cfg, kb, name)
    teacher, decoding, blind = build_teacher(cfg)
    g = cfg.generate
    settings = GenerationSettings(
        system_prompt=cfg.system_prompt,
        min_steps=g.min_steps,
        min_chars=g.min_answer_chars,
        max_retries=g.max_retries,
        max_new_tokens=g.max_new_tokens,
        temperature=g.temperature,
        top_p=g.top_p,
        blind=blind,
        decoding=decoding,
        seed=cfg.seed,
        answers_per_record=int(g.get("answers_per_record", 1)),
    )
    styles = list(cfg.data.styles)
    cot = generate_cot(
        splits["train"],
        teacher,
        kb,
        settings,
        progress_path(cfg, name),
        styles,
        prompts=prompt_assembler(cfg),
    )
    return {
        "records": [{**r, "split": s} for s in ("train", "val", "test") for r in splits[s]],
        "train": cot.samples,
        "val": [reference_sample(r, kb, cfg) for r in splits["val"]],
        "test": [reference_sample(r, kb, cfg) for r in splits["test"]],
        "rejects": cot.rejects,
        "metrics": {
            **cot.stats(),
            "teacher": teacher.name,
            "decoding": decoding,
            "records": {s: len(splits[s]) for s in ("train", "val", "test")},
            "contamination_rate": splits["contamination"]["rate"],
            "contamination_dropped": len(splits["contamination"]["dropped"]),
        },
    }


def evolved_pool_path(cfg: DictConfig) -> Path:
    return Path(cfg.paths.data) / "prompts" / "evolved.jsonl"


def prompt_assembler(cfg: DictConfig):
    """`generate.prompts=evolved`: the assembler over the evolved pool; None for standard."""
    if cfg.generate.get("prompts", "standard") != "evolved":
        return None
    from cift.generate.evolve import PromptAssembler, load_parts
    from cift.io.jsonl import read_jsonl_trusted

    pool = read_jsonl_trusted(evolved_pool_path(cfg))
    weights = OmegaConf.to_container(cfg.generate.evolve.task_weights)
    return PromptAssembler(pool, load_parts(), weights, cfg.seed)


def build_teacher(cfg: DictConfig):
    """(teacher, decoding, blind) from `cfg.teacher`."""
    t = cfg.teacher
    return instantiate(t.backend), t.decoding, bool(t.blind)


def progress_path(cfg: DictConfig, name: str) -> Path:
    """Outside the stage's declared outputs (DVC deletes those before a run), keyed by config."""
    import hashlib
    import json

    keys = {
        k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("generate", "teacher", "data")
    }
    keys["seed"] = cfg.seed
    digest = hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cfg.paths.data) / "progress" / f"{name}-{digest}.jsonl"
