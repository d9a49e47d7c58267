"""An imported batch: a user's Alpaca/ShareGPT JSONL instead of synthetic records.

Its samples are already answers, so no teacher runs; they are read by the one sample reader
(rejected lines kept with file, line and field), redacted, and split by record.
"""

from __future__ import annotations

from omegaconf import DictConfig

from cift.data.splits import split_by_record
from cift.io.jsonl import read_samples


def imported_batch(cfg: DictConfig, spec: dict) -> dict:
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
    summary = read.summary()
    return {
        **out,
        "records": [
            {"id": r["id"], "batch": name, "split": s, "samples": len(by_record[r["id"]])}
            for s in ("train", "val", "test")
            for r in splits[s]
        ],
        "rejects": [r.to_dict() for r in read.rejects],
        "metrics": {
            "teacher": "imported",
            **{k: summary[k] for k in ("lines", "accepted", "rejected", "blank")},
            "records": {s: len(splits[s]) for s in ("train", "val", "test")},
        },
    }
