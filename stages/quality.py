"""DVC stage `quality@<i>`: Dial-insight's dataset metrics for a batch's generated candidates and
for the filter's selection, so `dvc metrics diff` compares datasets across runs.

Usage: python stages/quality.py BATCH_NAME
Writes data/quality/<batch>.json and runs/<experiment>/<batch>/quality.json. Not inside
data/batches/: `continual` depends on that folder, and a quality report must not rerun it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(name: str) -> None:
    from cift.config import load_params
    from cift.data.quality import quality_parts, quality_report
    from cift.io.jsonl import read_jsonl_trusted, write_json_atomic

    cfg = load_params()
    batch = Path(cfg.paths.data) / "batches" / name
    records = (
        read_jsonl_trusted(batch / "records.jsonl") if (batch / "records.jsonl").is_file() else []
    )
    count, embed, grade = quality_parts(cfg, records)
    selected = Path(cfg.paths.runs) / cfg.experiment_name / name
    out = {}
    for label, samples, path in (
        ("candidates", batch / "train.jsonl", Path(cfg.paths.data) / "quality" / f"{name}.json"),
        ("selected", selected / "selected.jsonl", selected / "quality.json"),
    ):
        report = quality_report(
            read_jsonl_trusted(samples), count, embed, grade, float(cfg.quality.threshold)
        )
        write_json_atomic(path, report)
        out[label] = report
    print(
        json.dumps(
            {k: {m: v[m] for m in ("n", "richness", "label_quality")} for k, v in out.items()}
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
