"""From the run config to one batch's records, splits and samples (the generate stage's library).

Records are sampled in memory, deterministically, for every synthetic batch up to the one asked
for, so each batch's stage is self-contained yet near-duplicates of earlier batches are real.
What is already held out for evaluation (the global test set, earlier val/test splits) comes in
as `heldout` entries (data/heldout/<prev>.jsonl in the DAG), and training never near-duplicates it.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from cift.config import domain_kb
from cift.data.records import (
    batch_conditions,
    sample_batches,
    sample_global_test,
    sample_held_out,
)
from cift.data.redact import redact_sample
from cift.data.reference import reference_answer
from cift.data.sample import record_sample, sample_task
from cift.data.splits import (
    contamination_filter,
    minilm_embedder,
    split_by_record,
    training_contamination,
)
from cift.kb import KnowledgeBase


def synthetic_records(cfg: DictConfig, kb: KnowledgeBase) -> dict[str, list[dict]]:
    """Records of every synthetic batch, in config order (imported batches bring their own).

    Near-duplicates copy only an earlier batch's training split: a copy of an earlier val/test
    record in later training would be a leak."""
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
        trainable=lambda batch, records: _split(cfg, records, batch)["train"],
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
        min_val=cfg.data.min_val_records,
        train_only=lambda r: bool(r.get("near_duplicate_of")),
    )


def heldout_entries(records: list[dict], split: str, text_fn: Callable[[dict], str]) -> list[dict]:
    """Evaluation records as the cross-batch check reads them later: id, batch, split, text.

    data/heldout/<batch>.jsonl holds these for the global test set and every val/test split up
    to <batch> (a chain: each generate@<i> extends its predecessor's file), so a later batch's
    training candidates are checked against every evaluation text already fixed."""
    return [
        {
            "id": str(r["id"]),
            "batch": str(r.get("batch", "")),
            "split": split,
            "condition": r.get("condition"),
            "text": text_fn(r),
        }
        for r in records
    ]


def batch_splits(
    cfg: DictConfig,
    kb: KnowledgeBase,
    name: str,
    heldout: list[dict],
    *,
    all_records: dict[str, list[dict]] | None = None,
    check: Contamination | None = None,
) -> dict:
    """train/val/test records of one synthetic batch, leak-free in both directions.

    Cross-batch: training candidates that near-duplicate a `heldout` entry (the global test set
    and earlier batches' val/test, see `heldout_entries`) are dropped. Within the batch:
    evaluation records that near-duplicate any training record (of this or an earlier batch) are
    dropped; val and test are then topped up to `data.min_val_records` / `data.min_test_records`
    with training records that near-duplicate no remaining training record and that no later
    batch copies. `contamination` says what was dropped, why, and the rates.
    """
    all_records = all_records if all_records is not None else synthetic_records(cfg, kb)
    check = check or Contamination(cfg, kb)
    earlier_train: list[dict] = []
    for batch, records in all_records.items():
        split = _split(cfg, records, batch)
        if batch == name:
            break
        earlier_train += split["train"]
    else:
        raise KeyError(f"params.yaml: data.batches: {name!r} is not a synthetic batch")
    train, cross = check.training(split["train"], heldout)
    kept, dropped = check.evals(earlier_train + train, split["val"] + split["test"])
    keep = {r["id"] for r in kept}
    evals = {s: [r for r in split[s] if r["id"] in keep] for s in ("val", "test")}
    examined = len(split["val"]) + len(split["test"])
    copied = {r["near_duplicate_of"] for recs in all_records.values() for r in recs}
    candidates = [r for r in train if r["id"] not in copied and not r.get("near_duplicate_of")]
    random.Random(f"{cfg.seed}-{name}-top-up").shuffle(candidates)
    minimum = {"test": cfg.data.min_test_records, "val": cfg.data.min_val_records}
    for side in ("test", "val"):
        while len(evals[side]) < minimum[side] and candidates:
            cand = candidates.pop()
            rest = [r for r in train if r is not cand]
            ok, bad = check.evals(earlier_train + rest, [cand])
            examined += 1
            dropped += bad  # a near-duplicate stays in train, where it does no harm
            if ok:
                train, evals[side] = rest, [*evals[side], cand]
    return {
        "train": train,
        **evals,
        "contamination": {
            "dropped": dropped,
            "rate": len(dropped) / max(examined, 1),
            "cross_batch": cross,
            "cross_batch_rate": len(cross) / max(len(split["train"]), 1),
        },
    }


def training_records(cfg: DictConfig, kb: KnowledgeBase) -> list[dict]:
    """Every synthetic batch's training records (what no evaluation record may near-duplicate)."""
    return [
        r
        for batch, recs in synthetic_records(cfg, kb).items()
        for r in _split(cfg, recs, batch)["train"]
    ]


def _leak_free(
    kb: KnowledgeBase,
    want: dict[str, int],
    train: list[dict],
    check: Contamination,
    draw: Callable[[KnowledgeBase, int], list[dict]],
    prefix: str,
) -> dict:
    """`want[condition]` records per condition that near-duplicate no `train` record.

    `draw(short_kb, round)` gives candidates for the conditions still short, in growing rounds
    (4x, then 8x, 16x, 32x what is wanted); kept records get ids "<prefix>-0001"... in KB
    order, which say nothing about the round they came from."""
    chosen: dict[str, list[dict]] = {name: [] for name in want}
    dropped: list[dict] = []
    examined = 0
    for round_ in range(4):
        missing = {n: k - len(chosen[n]) for n, k in want.items() if len(chosen[n]) < k}
        if not missing:
            break
        candidates = draw(kb.subset(list(missing)), round_)
        kept, bad = check.evals(train, candidates)
        examined, dropped = examined + len(candidates), dropped + bad
        for r in kept:
            if len(chosen[r["condition"]]) < want[r["condition"]]:
                chosen[r["condition"]].append(r)
    test = [r for name in kb.names if name in chosen for r in chosen[name]]
    for i, r in enumerate(test):
        r["id"] = f"{prefix}-{i + 1:04d}"
    rate = len(dropped) / examined if examined else 0.0
    return {"test": test, "contamination": {"dropped": dropped, "rate": rate}}


def global_test(cfg: DictConfig, kb: KnowledgeBase, *, check: Contamination | None = None) -> dict:
    """The fixed global test set: `data.global_test_per_condition` records of every condition
    that near-duplicate no batch's training record (candidates drawn in growing rounds)."""
    per = cfg.data.global_test_per_condition
    return _leak_free(
        kb,
        {name: per for name in kb.names},
        training_records(cfg, kb),
        check or Contamination(cfg, kb),
        lambda short, round_: sample_global_test(short, per * 4 << round_, cfg.seed + round_),
        "g",
    )


TABLE1_BATCH = "table1"  # the `batch` of Table 1's test records (ids "t1-0001"...)


def table1_test(cfg: DictConfig, kb: KnowledgeBase, *, check: Contamination | None = None) -> dict:
    """Table 1's test set: `data.table1_test_records` records from the first batch's own
    distribution (its conditions drawn with its focus weights, as its records are), none of
    which near-duplicates any batch's training record. The condition mix is drawn first and
    kept: a condition whose candidates are often dropped is topped up, not under-represented."""
    first = OmegaConf.to_container(cfg.data.batches[0], resolve=True)
    if first.get("source") != "synthetic":
        raise ValueError(
            f"params.yaml: data.batches[0] ({first.get('name')!r}) is not synthetic: "
            "Table 1's test set is drawn from the first batch's distribution"
        )
    n = int(cfg.data.table1_test_records)
    want = dict(Counter(batch_conditions(kb, first, n, cfg.seed)))

    def draw(short: KnowledgeBase, round_: int) -> list[dict]:
        counts = {name: want[name] * 4 << round_ for name in short.names}
        seed = cfg.seed * 1000 + 500 + round_  # not the global test set's seeds
        # the whole KB: a record's noise symptoms come from every condition, as in batch 1
        return sample_held_out(kb, counts, seed, batch=TABLE1_BATCH, prefix="t1")

    result = _leak_free(
        kb, want, training_records(cfg, kb), check or Contamination(cfg, kb), draw, "t1"
    )
    got = len(result["test"])
    if got < n:
        raise ValueError(
            f"params.yaml: data.table1_test_records={n}: only {got} records of batch "
            f"{first['name']!r}'s conditions near-duplicate no training record"
        )
    return result


class Contamination:
    """The contamination rule (`data.contamination`) with MiniLM embeddings memoised across calls.

    `evals(train, evals)` drops evaluation records close to training records (within a batch);
    `training(candidates, heldout)` drops training candidates close to held-out entries (across
    batches). Both apply the same rule in the same direction."""

    def __init__(
        self,
        cfg: DictConfig,
        kb: KnowledgeBase,
        embed_fn: Callable[[list[str]], np.ndarray] | None = None,
    ) -> None:
        self.cfg, self.kb, self.rule = cfg, kb, cfg.data.contamination
        self._embed = embed_fn or minilm_embedder()  # another embedder only in tests
        self._memo: dict[str, object] = {}

    def text(self, record: dict) -> str:
        return record_text(record, self.kb, self.cfg)

    def embed(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if missing:
            self._memo.update(zip(missing, self._embed(missing), strict=True))
        return np.stack([self._memo[t] for t in texts])

    def evals(self, train: list[dict], evals: list[dict]) -> tuple[list[dict], list[dict]]:
        kept, dropped, _ = contamination_filter(
            train,
            evals,
            texts_fn=self.text,
            embed_fn=self.embed,
            cosine=self.rule.cosine,
            ngram=self.rule.ngram,
            ngram_overlap=self.rule.ngram_overlap,
        )
        return kept, dropped

    def training(
        self,
        candidates: list[dict],
        heldout: list[dict],
        text_fn: Callable[[dict], str] | None = None,
    ) -> tuple[list[dict], list[dict]]:
        """(kept, dropped) candidates; a dropped entry names the held-out id and its batch."""
        kept, dropped = training_contamination(
            candidates,
            [e["text"] for e in heldout],
            [e["id"] for e in heldout],
            texts_fn=text_fn or self.text,
            embed_fn=self.embed,
            cosine=self.rule.cosine,
            ngram=self.rule.ngram,
            ngram_overlap=self.rule.ngram_overlap,
        )
        where = {e["id"]: (e["batch"], e["split"]) for e in heldout}
        for d in dropped:
            d["eval_batch"], d["eval_split"] = where[d["eval_id"]]
        return kept, dropped


def cross_batch_rejects(dropped: list[dict]) -> list[dict]:
    """Cross-batch drops as rejects.jsonl lines (the reason names the rule and the matched id)."""
    return [
        {
            "record_id": d["record"]["id"],
            "reason": f"cross_batch_contamination:{d['reason']}",
            "final": True,
            "score": round(d["score"], 4),
            "eval_id": d["eval_id"],
            "eval_batch": d["eval_batch"],
            "eval_split": d["eval_split"],
        }
        for d in dropped
    ]


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


def synthetic_batch(cfg: DictConfig, name: str, heldout: list[dict]) -> dict:
    """records, train (teacher CoT), val/test (KB references), rejects, the batch's own held-out
    entries and metrics of a batch; `heldout`: what is already held out (see `batch_splits`)."""
    from cift.generate.cot import GenerationResult, GenerationSettings, generate_cot
    from cift.generate.teachers.mix import assign, build_members

    kb = domain_kb(cfg)
    check = Contamination(cfg, kb)
    splits = batch_splits(cfg, kb, name, heldout, check=check)
    members = build_members(cfg.teacher)
    g = cfg.generate
    styles = list(cfg.data.styles)
    results = {}
    assigned = assign(splits["train"], members, cfg.seed)
    for member in members:
        records = assigned[member.name]
        settings = GenerationSettings(
            system_prompt=cfg.system_prompt,
            min_steps=g.min_steps,
            min_chars=g.min_answer_chars,
            max_retries=g.max_retries,
            max_new_tokens=g.max_new_tokens,
            temperature=g.temperature,
            top_p=g.top_p,
            blind=member.blind,
            decoding=member.decoding,
            seed=cfg.seed,
            answers_per_record=int(g.get("answers_per_record", 1)),
        )
        progress = progress_path(cfg, name if len(members) == 1 else f"{name}-{member.name}")
        results[member.name] = generate_cot(
            records, member.backend, kb, settings, progress, styles, prompts=prompt_assembler(cfg)
        )
    cot = GenerationResult.merged(results.values())
    order = {r["id"]: i for i, r in enumerate(splits["train"])}  # the stream's order, not by member
    cot.samples.sort(key=lambda s: order.get(s["meta"].get("record_id"), len(order)))
    return {
        "records": [{**r, "split": s} for s in ("train", "val", "test") for r in splits[s]],
        "train": cot.samples,
        "val": [reference_sample(r, kb, cfg) for r in splits["val"]],
        "test": [reference_sample(r, kb, cfg) for r in splits["test"]],
        "rejects": cot.rejects + cross_batch_rejects(splits["contamination"]["cross_batch"]),
        "heldout": [e for s in ("val", "test") for e in heldout_entries(splits[s], s, check.text)],
        "metrics": {
            **cot.stats(),
            "teacher": cfg.teacher.name,
            "decoding": "+".join(dict.fromkeys(m.decoding for m in members)),
            # per member: its share, yield and tokens/s (a mix's LLM and template answers apart)
            "teachers": {
                m.name: {"share": round(m.share, 4), "decoding": m.decoding}
                | results[m.name].stats()
                for m in members
            },
            "records": {s: len(splits[s]) for s in ("train", "val", "test")},
            "contamination": contamination_metrics(splits["contamination"], len(heldout)),
        },
    }


def contamination_metrics(contamination: dict, n_heldout: int) -> dict:
    """generate.json's contamination: within the batch (evaluation records dropped for copying
    training) and across batches (training candidates dropped for copying held-out records)."""
    cross = contamination["cross_batch"]
    return {
        "within_batch": {
            "dropped": len(contamination["dropped"]),
            "rate": contamination["rate"],
        },
        "cross_batch": {
            "dropped": len(cross),
            "rate": contamination["cross_batch_rate"],
            "heldout_checked": n_heldout,
            "by_eval_batch": dict(sorted(Counter(d["eval_batch"] for d in cross).items())),
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
