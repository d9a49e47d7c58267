"""DVC stage `evaluate@<i>`: the candidate trained on batch i vs the deployed model.

Usage: python stages/evaluate.py BATCH_NAME
The gate reads validation splits only (this batch's and every earlier one, for forgetting) plus
the pairwise judge on this batch's validation split; this batch's test split is reported, never
gated on (the judge also compares the two there, for the report). With `gate.metric=direct` the
validation splits are scored by the direct ranked score (no answer generated: cheap enough for
splits large enough to decide), and answers are generated only for the first
`gate.generated_cases` of this batch's validation cases (safety, judge) and its test split.
A judge below
`judge.min_calibration` on `cift judge calibrate`'s planted pairs (measured once per judge config
and cached) judges nothing: decision.json and evaluate.json record it as uninformative. Writes
runs/<experiment>/<batch>/{evaluate.json, decision.json, predictions.jsonl, judgments.jsonl,
confusion.json}.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from pathlib import Path


def main(name: str) -> None:
    from cift.config import batches_through, load_params
    from cift.deploy.pointers import previous_pointer, version_dir
    from cift.evaluate.build import (
        build_evaluator,
        judge_configured,
        pointer_version,
        version_of,
    )
    from cift.evaluate.calibrate import judge_status
    from cift.evaluate.gate import case_scores, gate_decision
    from cift.evaluate.judge import pair_items
    from cift.evaluate.known import known_accuracy, known_rows
    from cift.evaluate.suite import summary
    from cift.io.jsonl import read_jsonl_trusted, write_json_atomic, write_jsonl_atomic
    from cift.tracking import log_summary, stage_run

    started = time.perf_counter()
    cfg = load_params()
    exp, runs, data = cfg.experiment_name, Path(cfg.paths.runs), Path(cfg.paths.data)
    names = batches_through(cfg, name)
    # every batch's validation cases up to this one, from the held-out chain generate@<i> wrote
    chain = [e for e in read_jsonl_trusted(data / "heldout" / f"{name}.jsonl") if e.get("sample")]
    val = {b: [e["sample"] for e in chain if (e["batch"], e["split"]) == (b, "val")] for b in names}
    metric, generated = str(cfg.gate.metric), cfg.gate.get("generated_cases")
    direct = metric == "direct"
    if direct:  # answers for safety and the judge on this batch's cases only
        splits = {f"val/{name}": val[name][:generated] if generated is not None else val[name]}
    else:  # the gate's scores come from the answers, on every validation split
        splits = {f"val/{b}": val[b] for b in names}
    splits[f"test/{name}"] = read_jsonl_trusted(data / "batches" / name / "test.jsonl")
    records = [e["record"] for e in chain if e.get("record")]
    records += read_jsonl_trusted(data / "batches" / name / "records.jsonl")
    ev = build_evaluator(cfg, records)

    from hydra.utils import instantiate

    spec = instantiate(cfg.model)
    prev = previous_pointer(cfg, name, "deployed")
    versions = {
        "candidate": version_of(f"{exp}/{name}", version_dir(runs, exp, name), spec),
        "deployed": pointer_version(prev, spec),
    }
    results, gen_stats, known = {}, {}, {}
    for role, version in versions.items():
        results[role], gen_stats[role] = ev.evaluate_version(version, splits)
        if direct:  # known_rows keeps the samples' order: split it back per batch
            rows, gen_stats[role]["direct"] = known_rows(
                ev.load_model,
                version,
                [s for b in names for s in val[b]],
                ev.kb,
                cfg.system_prompt,
                cache=ev.rank_cache,
                max_tokens=ev.rank_max_tokens,
            )
            starts = [0, *itertools.accumulate(len(val[b]) for b in names)]
            spans = itertools.pairwise(starts)
            known[role] = {b: rows[i:j] for b, (i, j) in zip(names, spans, strict=True)}

    (judge, calibration, uninformative), judged = judge_status(cfg), {}
    for split in (f"val/{name}", f"test/{name}") if judge is not None else ():
        answers = {
            role: {r["id"]: r["answer"] for r in results[role][split]["rows"]} for role in versions
        }
        judged[split] = judge_configured(
            cfg, judge, pair_items(splits[split], answers["candidate"], answers["deployed"])
        )

    def gate_view(role: str) -> dict:
        gen_val = {b: results[role][f"val/{b}"] for b in names if f"val/{b}" in results[role]}
        if direct:
            scores = {b: case_scores(known[role][b], metric) for b in names}
        else:
            scores = {b: case_scores(m["rows"], metric) for b, m in gen_val.items()}
        return {
            "val_scores": scores,
            "safety_violations": sum(m["safety_violations"] for m in gen_val.values()),
            "safety_cases": {r["id"]: r["safety"] for m in gen_val.values() for r in m["rows"]},
        }

    decision = gate_decision(
        gate_view("candidate"),
        gate_view("deployed"),
        batch=name,
        margin=float(cfg.gate.margin),
        metric=metric,
        forgetting=str(cfg.gate.forgetting),
        judge=judged.get(f"val/{name}"),
        min_consistency=float(cfg.gate.judge_min_consistency),
        judge_calibration=calibration["accuracy"] if calibration else None,
        min_calibration=float(cfg.judge.min_calibration),
        n_boot=int(cfg.gate.bootstrap),
        seed=int(cfg.seed),
    )
    decision |= {role: v.pointer() for role, v in versions.items()}
    out = runs / exp / name
    rows = [
        {"version": versions[role].name, "role": role, "split": split, **row}
        for role in versions
        for split, m in results[role].items()
        for row in m["rows"]
    ]
    write_jsonl_atomic(out / "predictions.jsonl", rows)
    write_json_atomic(
        out / "confusion.json",
        {role: {s: m["confusion"] for s, m in results[role].items()} for role in versions},
    )
    judge_keys = (
        "win_rate",
        "win_rate_ci",
        "wins",
        "losses",
        "ties",
        "consistency",
        "inconclusive",
    )
    judge_summary = {split: {k: j[k] for k in judge_keys} for split, j in judged.items()}
    write_jsonl_atomic(
        out / "judgments.jsonl",
        [{"split": split, **row} for split, j in judged.items() for row in j["rows"]],
    )
    write_json_atomic(out / "decision.json", decision)
    metrics = {
        "batch": name,
        "promote": decision["promote"],
        **{role: {split: summary(m) for split, m in results[role].items()} for role in versions},
        "direct": {  # the direct ranked score per validation split (gate.metric=direct)
            role: {
                f"val/{b}": known_accuracy(rows, n_boot=int(cfg.gate.bootstrap), seed=cfg.seed)
                for b, rows in per_batch.items()
            }
            for role, per_batch in known.items()
        }
        or None,
        "judge": uninformative or judge_summary or None,  # candidate vs deployed, per split
        "judge_calibration": calibration,
        "generation": gen_stats,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json_atomic(out / "evaluate.json", metrics)
    with stage_run(cfg, "evaluate", batch=name) as run:
        this_batch, this_batch_ranked = (  # the same keys in every batch's run, lined up
            {
                role: {s: results[role][f"{s}/{name}"][key] for s in ("val", "test")}
                for role in versions
            }
            for key in ("accuracy", "ranked_accuracy")
        )
        log_summary(
            run,
            {k: metrics[k] for k in ("promote", "candidate", "deployed", "seconds")}
            | {
                "judge": judge_summary,
                "this_batch": this_batch,
                "this_batch_ranked": this_batch_ranked,
            },
            reasons="; ".join(decision["reasons"]) or None,
        )
    print(
        json.dumps({"batch": name, "promote": decision["promote"], "reasons": decision["reasons"]})
    )


if __name__ == "__main__":
    main(sys.argv[1])
