"""DVC stage `generate@<i>`: a batch's records → CoT train samples + KB-reference val/test.

Usage: python stages/generate.py BATCH_NAME   (reads params.yaml and data/heldout/<prev>.jsonl;
writes data/batches/BATCH_NAME/ and data/heldout/BATCH_NAME.jsonl)

data/heldout/<prev>.jsonl holds every evaluation text fixed before this batch (the global test
set from `global_test`, then each earlier batch's val/test): training candidates close to one are
dropped (rejects.jsonl), and this batch's val/test are appended for the next batch.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main(name: str) -> None:
    from cift.config import batch_spec, load_params
    from cift.generate.batches import redacted, synthetic_batch
    from cift.generate.imported import imported_batch
    from cift.io.jsonl import read_jsonl_trusted, write_json_atomic, write_jsonl_atomic
    from cift.tracking import log_summary, stage_run

    started = time.perf_counter()
    cfg = load_params()
    spec = batch_spec(cfg, name)
    chain = Path(cfg.paths.data) / "heldout"
    heldout = read_jsonl_trusted(chain / f"{spec['prev']}.jsonl")
    if spec["source"] == "synthetic":
        result = synthetic_batch(cfg, name, heldout)
    else:
        result = imported_batch(cfg, spec, heldout)
    out = Path(cfg.paths.data) / "batches" / name
    written = {split: redacted(result[split]) for split in ("train", "val", "test")}
    for split, samples in written.items():
        write_jsonl_atomic(out / f"{split}.jsonl", samples)
    write_jsonl_atomic(out / "records.jsonl", result["records"])
    write_jsonl_atomic(out / "rejects.jsonl", result["rejects"])
    write_jsonl_atomic(chain / f"{name}.jsonl", heldout + with_cases(result, written))
    metrics = {
        "batch": name,
        **result["metrics"],
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json_atomic(out / "generate.json", metrics)
    with stage_run(cfg, "generate", batch=name) as run:
        log_summary(run, metrics)  # contamination/{within_batch,cross_batch}/rate among them
    print(metrics)


def with_cases(result: dict, written: dict[str, list[dict]]) -> list[dict]:
    """This batch's held-out entries, each with its validation/test sample (as `written`) and
    its record: evaluate@<later> reads earlier batches' validation cases from the chain it
    declares."""
    samples = {s["id"]: s for split in ("val", "test") for s in written[split]}
    records = {r["id"]: r for r in result["records"]}
    by_record = {(s.get("meta") or {}).get("record_id", s["id"]): s for s in samples.values()}
    return [
        e
        | {"sample": samples.get(e["id"]) or by_record.get(e["id"]), "record": records.get(e["id"])}
        for e in result["heldout"]
    ]


if __name__ == "__main__":
    main(sys.argv[1])
