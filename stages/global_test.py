"""DVC stage `global_test`: the fixed test sets, with KB reference answers: the global one over
every condition (final production), Table 1's, from the first batch's own distribution, and the
probe set (patients' own words, `cift.generate.probe`).

Usage: python stages/global_test.py   (reads params.yaml; writes data/global/ and
data/heldout/base.jsonl, the start of the held-out chain that generate@<i> checks training
against: all three sets are in it)
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
        table1_test,
    )
    from cift.generate.probe import probe_set
    from cift.io.jsonl import write_json_atomic, write_jsonl_atomic
    from cift.tracking import log_summary, stage_run

    cfg = load_params()
    kb = domain_kb(cfg)
    check = Contamination(cfg, kb)  # one embedding memo for every set
    result = global_test(cfg, kb, check=check)
    table1 = table1_test(cfg, kb, check=check)
    probe = probe_set(cfg, kb, check)
    out = Path(cfg.paths.data) / "global"
    for name, got in (("", result), ("table1_", table1)):
        write_jsonl_atomic(out / f"{name}records.jsonl", got["test"])
        samples = [reference_sample(r, kb, cfg) for r in got["test"]]
        write_jsonl_atomic(out / f"{name}test.jsonl", samples)
        write_jsonl_atomic(out / f"{name}contamination.jsonl", got["contamination"]["dropped"])
    write_jsonl_atomic(out / "probe.jsonl", probe["samples"])
    entries = heldout_entries(result["test"], "global_test", lambda r: record_text(r, kb, cfg))
    entries += heldout_entries(table1["test"], "table1_test", lambda r: record_text(r, kb, cfg))
    entries += probe["heldout"]
    write_jsonl_atomic(Path(cfg.paths.data) / "heldout" / "base.jsonl", entries)
    metrics = {
        "records": len(result["test"]),
        "conditions": len({r["condition"] for r in result["test"]}),
        "contamination_rate": result["contamination"]["rate"],
        "probe_records": len(probe["samples"]),
        "probe_contamination_rate": probe["contamination"]["rate"],
        "table1": {
            "records": len(table1["test"]),
            "conditions": len({r["condition"] for r in table1["test"]}),
            "contamination_rate": table1["contamination"]["rate"],
        },
    }
    write_json_atomic(out / "global_test.json", metrics)
    with stage_run(cfg, "global_test") as run:
        log_summary(run, metrics)
    print(metrics)


if __name__ == "__main__":
    main()
