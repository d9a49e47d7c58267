"""DVC stage `continual`: the accuracy matrices of the chain, R (generated-answer accuracy) and
R_ranked (ranked accuracy), each with ACC / BWT / FWT and their bootstrap intervals, plus the
general-ability change (judged win rate of final production vs the base on held-out general
instructions, the judge seeing each task's instruction and input; "general_judge" is
"uninformative (calibration 0.xx)" and the win rate null when the judge failed calibration).

Usage: python stages/continual.py
Row 0 = the base, row k = what was deployed after batch k; each distinct version answers every
batch's test split once (answers are cached by version weights, so a kept batch costs nothing).
Final production and the base are also scored on the global test set (`global`: the proxy
ablation's final accuracy) and on the probe set, patients' own words (`probe`: both scores, fault
rate and intervals per role, and `vs_base`, the paired difference final − base of each score
with its interval). Writes reports/continual.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def main() -> None:
    from hydra.utils import instantiate

    from cift.config import load_params
    from cift.deploy.pointers import chain_path, read_pointer
    from cift.evaluate.answers import answer_sampling, generate_answers
    from cift.evaluate.build import (
        build_evaluator,
        judge_configured,
        pointer_version,
    )
    from cift.evaluate.calibrate import judge_status
    from cift.evaluate.continual import continual_intervals, continual_metrics
    from cift.evaluate.gate import case_scores
    from cift.evaluate.judge import pair_items
    from cift.evaluate.metrics import paired_diff_ci
    from cift.evaluate.suite import summary
    from cift.io.jsonl import read_jsonl_trusted, write_json_atomic
    from cift.tracking import log_summary, stage_run

    started = time.perf_counter()
    cfg = load_params()
    exp, runs, data = cfg.experiment_name, Path(cfg.paths.runs), Path(cfg.paths.data)
    names = [b.name for b in cfg.data.batches]
    tests = {b: read_jsonl_trusted(data / "batches" / b / "test.jsonl") for b in names}
    records = [r for b in names for r in read_jsonl_trusted(data / "batches" / b / "records.jsonl")]
    records += read_jsonl_trusted(data / "global" / "records.jsonl")
    spec = instantiate(cfg.model)
    ev = build_evaluator(cfg, records)
    pointers = [read_pointer(runs, exp, "base", "deployed")]
    pointers += [json.loads(chain_path(runs, exp, b).read_text()) for b in names]
    versions = [pointer_version(p, spec) for p in pointers]

    n_boot = int(cfg.gate.bootstrap)
    roles = {"final": versions[-1], "base": versions[0]}

    def paired_difference(model: dict, base: dict, metric: str) -> dict:
        """final − base on the same cases (0/1 each), with its bootstrap interval."""
        a, b = case_scores(model["rows"], metric), case_scores(base["rows"], metric)
        ids = sorted(set(a) & set(b))
        return paired_diff_ci(
            [a[i] for i in ids], [b[i] for i in ids], n_boot=n_boot, seed=int(cfg.seed)
        )

    per_version = [ev.evaluate_version(version, tests)[0] for version in versions]
    result: dict = {"rows": [v.name for v in versions]}
    # answers without a parseable diagnosis, per version and test split (R counts them as wrong)
    result["fault_rate"] = [[m[b]["fault_rate"] for b in names] for m in per_version]
    for suffix, metric, key in (
        ("", "generated", "accuracy"),
        ("_ranked", "ranked", "ranked_accuracy"),
    ):
        result[f"R{suffix}"] = [[m[b][key] for b in names] for m in per_version]
        result[f"R{suffix}_ci"] = [[m[b][f"{key}_ci"] for b in names] for m in per_version]
        scores = [[case_scores(m[b]["rows"], metric) for b in names] for m in per_version]
        intervals = continual_intervals(scores, n_boot=n_boot, seed=int(cfg.seed))
        for name, value in continual_metrics(result[f"R{suffix}"]).items():
            result[f"{name}{suffix}"] = value
            result[f"{name}{suffix}_ci"] = intervals[f"{name}_ci"]
    held = {"global": read_jsonl_trusted(data / "global" / "test.jsonl")}
    probe = read_jsonl_trusted(data / "global" / "probe.jsonl")
    if probe:  # patients' own words (none when data.probe_records is 0)
        held["probe"] = probe
    scored = {role: ev.evaluate_version(v, held)[0] for role, v in roles.items()}
    result["probe"] = None
    for name in held:
        result[name] = {
            role: {"version": v.name, **summary(scored[role][name])} for role, v in roles.items()
        }
    if probe:
        result["probe"]["vs_base"] = {
            key: paired_difference(scored["final"]["probe"], scored["base"]["probe"], metric)
            for key, metric in (("accuracy", "generated"), ("ranked_accuracy", "ranked"))
        }

    heldout = read_jsonl_trusted(data / "general" / "heldout.jsonl")
    result["general_win_rate"] = None
    judge, calibration, uninformative = judge_status(cfg)
    if uninformative:
        result["general_judge"] = uninformative
    result["judge_calibration"] = calibration
    if judge is not None and heldout and versions[-1].key != versions[0].key:
        # general answers have no Advice line
        sampling = answer_sampling(int(cfg.generate.general.max_new_tokens), stop_after_line=None)
        answers = [
            generate_answers(
                ev.make_generator, v, heldout, cfg.system_prompt, sampling, ev.cache, ev.batch_size
            )[0]
            for v in (versions[-1], versions[0])
        ]
        # open-ended tasks: judged without a reference, on the instruction and its input
        items = pair_items(heldout, answers[0], answers[1], with_reference=False)
        judged = judge_configured(cfg, judge, items)
        result["general_win_rate"] = judged["win_rate"]
        result["general_judge"] = {k: v for k, v in judged.items() if k != "rows"}
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_json_atomic(Path(cfg.paths.reports) / "continual.json", result)
    with stage_run(cfg, "continual") as run:
        keys = ("ACC", "BWT", "FWT", "ACC_ranked", "BWT_ranked", "FWT_ranked")
        keys += ("general_win_rate", "global", "probe", "seconds")
        log_summary(run, {k: result[k] for k in keys}, final_production=result["rows"][-1])
    keys = ("ACC", "BWT", "FWT", "ACC_ranked", "BWT_ranked", "FWT_ranked", "general_win_rate")
    print(json.dumps({k: result[k] for k in keys}))


if __name__ == "__main__":
    main()
