"""An imported batch: a user's Alpaca/ShareGPT JSONL instead of synthetic records.

Its samples are already answers, so no teacher runs; they are read by the one sample reader
(rejected lines kept with file, line and field), redacted, and split by record. Training samples
that near-duplicate a held-out text (the global test set, earlier val/test splits) are dropped as
synthetic ones are, and the batch's own val/test join the held-out chain.
"""

from __future__ import annotations

from omegaconf import DictConfig

from cift.data.splits import minilm_embedder, split_by_record, training_contamination
from cift.generate.batches import cross_batch_rejects
from cift.io.jsonl import read_samples


def _text(sample: dict) -> str:
    """What a model reads of a sample (its input, or the instruction when there is none)."""
    return str(sample.get("input") or sample.get("instruction") or "")


def imported_batch(cfg: DictConfig, spec: dict, heldout: list[dict] | None = None) -> dict:
    name = spec["name"]
    read = read_samples(spec["source"], fmt=spec.get("format", "alpaca"))
    by_record: dict[str, list[dict]] = {}
    for sample in read.accepted:
        meta = sample.setdefault("meta", {})
        meta.update(batch=name, source="imported")
        meta.setdefault("teacher", "imported")
        by_record.setdefault(str(meta.get("record_id") or sample["id"]), []).append(sample)
    splits = split_by_record(
        [{"id": rid} for rid in by_record],
        fractions=tuple(cfg.data.fractions),
        seed=f"{cfg.seed}-{name}",
        min_test=0,
    )
    out = {s: [x for r in splits[s] for x in by_record[r["id"]]] for s in ("train", "val", "test")}
    rule = cfg.data.contamination
    out["train"], cross = training_contamination(
        out["train"],
        [e["text"] for e in heldout or []],
        [e["id"] for e in heldout or []],
        texts_fn=_text,
        embed_fn=minilm_embedder(),
        cosine=rule.cosine,
        ngram=rule.ngram,
        ngram_overlap=rule.ngram_overlap,
    )
    where = {e["id"]: (e["batch"], e["split"]) for e in heldout or []}
    for d in cross:
        d["eval_batch"], d["eval_split"] = where[d["eval_id"]]
    summary = read.summary()
    return {
        **out,
        "heldout": [
            {"id": str(x["id"]), "batch": name, "split": s, "condition": None, "text": _text(x)}
            for s in ("val", "test")
            for x in out[s]
        ],
        "records": [
            {"id": r["id"], "batch": name, "split": s, "samples": len(by_record[r["id"]])}
            for s in ("train", "val", "test")
            for r in splits[s]
        ],
        "rejects": [r.to_dict() for r in read.rejects] + cross_batch_rejects(cross),
        "metrics": {
            "teacher": "imported",
            **{k: summary[k] for k in ("lines", "accepted", "rejected", "blank")},
            "records": {s: len(splits[s]) for s in ("train", "val", "test")},
            "contamination": {
                "cross_batch": {
                    "dropped": len(cross),
                    "rate": len(cross) / max(len(cross) + len(out["train"]), 1),
                    "heldout_checked": len(heldout or []),
                }
            },
        },
    }
