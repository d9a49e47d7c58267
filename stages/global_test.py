"""DVC stage `global_test`: the fixed test set over every condition, with KB reference answers,
and the probe set (patients' own words, `cift.generate.probe`) beside it.

Usage: python stages/global_test.py   (reads params.yaml; writes data/global/ and
data/heldout/base.jsonl, the start of the held-out chain that generate@<i> checks training
against: the global test set's and the probe set's texts)
"""

from __future__ import annotations

from pathlib import Path


def main() -> None:
    from cift.config import domain_kb, load_params
    from cift.generate.batches import (
        Contamination,
        global_test,
        heldout_entries,
        record_text,
        reference_sample,
    )
    from cift.generate.probe import probe_set
    from cift.io.jsonl import write_json_atomic, write_jsonl_atomic
    from cift.tracking import log_summary, stage_run

    cfg = load_params()
    kb = domain_kb(cfg)
    check = Contamination(cfg, kb)  # one embedding memo for both sets
    result = global_test(cfg, kb, check=check)
    probe = probe_set(cfg, kb, check)
    out = Path(cfg.paths.data) / "global"
    write_jsonl_atomic(out / "records.jsonl", result["test"])
    write_jsonl_atomic(out / "test.jsonl", [reference_sample(r, kb, cfg) for r in result["test"]])
    write_jsonl_atomic(out / "contamination.jsonl", result["contamination"]["dropped"])
    write_jsonl_atomic(out / "probe.jsonl", probe["samples"])
    entries = heldout_entries(result["test"], "global_test", lambda r: record_text(r, kb, cfg))
    entries += probe["heldout"]
    write_jsonl_atomic(Path(cfg.paths.data) / "heldout" / "base.jsonl", entries)
    metrics = {
        "records": len(result["test"]),
        "conditions": len({r["condition"] for r in result["test"]}),
        "contamination_rate": result["contamination"]["rate"],
        "probe_records": len(probe["samples"]),
        "probe_contamination_rate": probe["contamination"]["rate"],
    }
    write_json_atomic(out / "global_test.json", metrics)
    with stage_run(cfg, "global_test") as run:
        log_summary(run, metrics)
    print(metrics)


if __name__ == "__main__":
    main()
