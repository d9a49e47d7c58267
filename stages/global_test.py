"""DVC stage `global_test`: the fixed test set over every condition, with KB reference answers.

Usage: python stages/global_test.py   (reads params.yaml; writes data/global/ and
data/heldout/base.jsonl, the start of the held-out chain that generate@<i> checks training against)
"""

from __future__ import annotations

from pathlib import Path


def main() -> None:
    from cift.config import domain_kb, load_params
    from cift.generate.batches import (
        global_test,
        heldout_entries,
        record_text,
        reference_sample,
    )
    from cift.io.jsonl import write_json_atomic, write_jsonl_atomic
    from cift.tracking import log_summary, stage_run

    cfg = load_params()
    kb = domain_kb(cfg)
    result = global_test(cfg, kb)
    out = Path(cfg.paths.data) / "global"
    write_jsonl_atomic(out / "records.jsonl", result["test"])
    write_jsonl_atomic(out / "test.jsonl", [reference_sample(r, kb, cfg) for r in result["test"]])
    write_jsonl_atomic(out / "contamination.jsonl", result["contamination"]["dropped"])
    entries = heldout_entries(result["test"], "global_test", lambda r: record_text(r, kb, cfg))
    write_jsonl_atomic(Path(cfg.paths.data) / "heldout" / "base.jsonl", entries)
    metrics = {
        "records": len(result["test"]),
        "conditions": len({r["condition"] for r in result["test"]}),
        "contamination_rate": result["contamination"]["rate"],
    }
    write_json_atomic(out / "global_test.json", metrics)
    with stage_run(cfg, "global_test") as run:
        log_summary(run, metrics)
    print(metrics)


if __name__ == "__main__":
    main()
