"""DVC stage `generate@<i>`: a batch's records → CoT train samples + KB-reference val/test.

Usage: python stages/generate.py BATCH_NAME   (reads params.yaml; writes data/batches/BATCH_NAME/)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main(name: str) -> None:
    from cift.config import batch_spec, load_params
    from cift.generate.batches import redacted, synthetic_batch
    from cift.generate.imported import imported_batch
    from cift.io.jsonl import write_json_atomic, write_jsonl_atomic
    from cift.tracking import stage_run

    started = time.perf_counter()
    cfg = load_params()
    spec = batch_spec(cfg, name)
    if spec["source"] == "synthetic":
        result = synthetic_batch(cfg, name)
    else:
        result = imported_batch(cfg, spec)
    out = Path(cfg.paths.data) / "batches" / name
    for split in ("train", "val", "test"):
        write_jsonl_atomic(out / f"{split}.jsonl", redacted(result[split]))
    write_jsonl_atomic(out / "records.jsonl", result["records"])
    write_jsonl_atomic(out / "rejects.jsonl", result["rejects"])
    metrics = {
        "batch": name,
        **result["metrics"],
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json_atomic(out / "generate.json", metrics)
    with stage_run(cfg, "generate", name=f"{cfg.experiment_name}/generate/{name}") as run:
        run.log({k: v for k, v in metrics.items() if isinstance(v, int | float)})
    print(metrics)


if __name__ == "__main__":
    main(sys.argv[1])
