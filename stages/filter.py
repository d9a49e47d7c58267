"""DVC stages `filter@<i>` and `select_static@<i>`: length → diversity → IFD on the proxy →
selection, for one batch.

Usage: python stages/filter.py BATCH_NAME [--static]
Reads data/batches/<batch>/train.jsonl and the proxy pointer left by the previous batch;
writes runs/<experiment>/<batch>/{selected,rejected,scores}.jsonl, filter.json, plots/, and
quality.json: Dial-insight's metrics of the candidates and of the selection, here because this
process already holds MiniLM and the tokenizer (a stage of its own paid seconds of imports).
`--static` (the proxy ablation's cheap half) scores the same candidates with the initial proxy
instead and writes the same files under runs/<experiment>/<batch>/static/; nothing trains on
them, so both selections meet the same training history.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(name: str, static: bool = False) -> None:
    from hydra.utils import instantiate

    from cift.config import load_params
    from cift.deploy.pointers import previous_pointer, read_pointer
    from cift.filters.base import FilterContext
    from cift.filters.pipeline import build_steps, run_filter
    from cift.filters.report import histograms
    from cift.io.jsonl import read_samples, write_json_atomic, write_jsonl_atomic
    from cift.tracking import log_summary, stage_run

    started = time.perf_counter()
    cfg = load_params()
    exp, runs = cfg.experiment_name, cfg.paths.runs
    read = read_samples(Path(cfg.paths.data) / "batches" / name / "train.jsonl")
    chain_proxy = previous_pointer(cfg, name, "proxy")
    proxy = read_pointer(runs, exp, "base", "proxy") if static else chain_proxy
    same = (chain_proxy["version"], chain_proxy["adapter_path"]) == (
        proxy["version"],
        proxy["adapter_path"],
    )
    if static and same:  # the chain still scores with the initial proxy: same selection
        summary = reuse_chain_selection(Path(runs) / exp / name, started)
        with stage_run(cfg, "select_static", batch=name, arm="select_static") as run:
            log_summary(run, {k: summary[k] for k in SUMMARY_KEYS}, reused_from="filter")
        return
    ctx = FilterContext(
        system_prompt=cfg.system_prompt,
        proxy=instantiate(cfg.proxy.model),
        proxy_adapter=proxy["adapter_path"],
        seed=cfg.seed,
        n_in=len(read.accepted),
        extra={"reference": expert_answers(cfg, name)},
    )
    kept, rejected, scores, summary = run_filter(read.accepted, build_steps(cfg.filter), ctx)
    rejected += [
        {"line": r.line, "filter": {"step": "read", "reason": r.reason}, "message": r.message}
        for r in read.rejects
    ]
    out = Path(runs) / exp / name / ("static" if static else "")
    write_jsonl_atomic(out / "selected.jsonl", kept)
    write_jsonl_atomic(out / "rejected.jsonl", rejected)
    write_jsonl_atomic(out / "scores.jsonl", scores)
    plots = {} if static else histograms(scores)  # the dvc plots of the chain's own filter
    if not static:  # a declared output, even for a selector that scores nothing (random)
        (out / "plots").mkdir(parents=True, exist_ok=True)
    for score, rows in plots.items():
        write_json_atomic(out / "plots" / f"{score}.json", rows)
    summary |= {
        "batch": name,
        "filter": cfg.filter.name,
        "proxy": proxy,
        "input_rejected": len(read.rejects),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json_atomic(out / "filter.json", summary)
    if not static:
        summary_quality = quality(cfg, name, read.accepted, kept)
        write_json_atomic(out / "quality.json", summary_quality)
    stage = "select_static" if static else "filter"  # its own arm: never averaged with filter
    with stage_run(cfg, stage, batch=name, arm=stage if static else None) as run:
        headline = {k: summary[k] for k in SUMMARY_KEYS}
        log_summary(
            run,
            headline | ({} if static else {"quality": summary_quality}),
            proxy_version=proxy["version"],
        )
    print(json.dumps({k: summary[k] for k in ("batch", "n_in", "kept", "seconds")}))


SUMMARY_KEYS = ("n_in", "kept", "seconds")  # the run summary (quality.json's metrics beside)


def quality(cfg, name: str, candidates: list[dict], kept: list[dict]) -> dict:
    """{"candidates": report, "selected": report, "seconds"} (cift.data.quality)."""
    from cift.data.quality import quality_parts, quality_report

    started = time.perf_counter()
    count, embed, grade = quality_parts(cfg, batch_records(cfg, name))
    threshold = float(cfg.quality.threshold)
    out = {
        label: quality_report(samples, count, embed, grade, threshold)
        for label, samples in (("candidates", candidates), ("selected", kept))
    }
    return out | {"seconds": round(time.perf_counter() - started, 1)}


def reuse_chain_selection(folder: Path, started: float) -> dict:
    """static/ = the chain's own filter output (identical inputs, identical proxy)."""
    from cift.io.jsonl import read_jsonl_trusted, write_json_atomic, write_jsonl_atomic

    for file in ("selected.jsonl", "rejected.jsonl", "scores.jsonl"):
        write_jsonl_atomic(folder / "static" / file, read_jsonl_trusted(folder / file))
    summary = json.loads((folder / "filter.json").read_text(encoding="utf-8"))
    summary |= {"reused_from": "filter", "seconds": round(time.perf_counter() - started, 1)}
    write_json_atomic(folder / "static" / "filter.json", summary)
    print(json.dumps({"batch": summary["batch"], "reused_from": "filter"}))
    return summary


def expert_answers(cfg, name: str):
    """sample -> the KB-built expert answer for its record (G-DIG's seed set), or None."""
    from cift.config import domain_kb
    from cift.generate.batches import reference_sample

    loaded: dict = {}  # records and KB, read on the first call (only G-DIG asks)

    def reference(sample: dict) -> dict | None:
        if not loaded:
            records = batch_records(cfg, name)
            loaded.update(records={r["id"]: r for r in records}, kb=domain_kb(cfg))
        record = loaded["records"].get((sample.get("meta") or {}).get("record_id"))
        return reference_sample(record, loaded["kb"], cfg) if record else None

    return reference


def batch_records(cfg, name: str) -> list[dict]:
    """The batch's records (what its samples were generated from); none for imported data."""
    from cift.io.jsonl import read_jsonl_trusted

    path = Path(cfg.paths.data) / "batches" / name / "records.jsonl"
    return read_jsonl_trusted(path) if path.is_file() else []


if __name__ == "__main__":
    main(sys.argv[1], static="--static" in sys.argv[2:])
