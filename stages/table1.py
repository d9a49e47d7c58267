"""DVC stage `table1@<arm>`: the first batch's data, all candidates (`full`) vs the filter's
selection (`filtered`), each trained from the base and scored on the global test set.

Usage: python stages/table1.py ARM SAMPLES_JSONL (dvc.yaml passes both)
`full` trains on every candidate that passed validation (data/batches/<first>/train.jsonl);
`filtered` on filter@<first>'s selection (the configured filter: the top third by IFD by
default). Same replay mix, LoRA config, epochs and seed. The base model is scored on the same
cases (answers cached), so each arm carries the paired difference to the base with its interval,
for the generated-answer accuracy (`vs_base`) and the ranked accuracy (`vs_base_ranked`).
Writes runs/<experiment>/table1/<arm>/adapter/ and runs/<experiment>/table1/<arm>.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(arm: str, source: str) -> None:
    from hydra.utils import instantiate

    from cift.config import load_params
    from cift.io.jsonl import read_jsonl_trusted, write_json_atomic
    from cift.tracking import log_summary, stage_run

    started = time.perf_counter()
    cfg = load_params()
    domain = read_jsonl_trusted(source)
    out = Path(cfg.paths.runs) / cfg.experiment_name / "table1"
    spec = instantiate(cfg.model)
    # one W&B run per arm: Lightning's curves and the scores below go to the same run
    with stage_run(cfg, "table1", arm=arm) as run:
        result = run_arm(cfg, arm, source, domain, spec, run)
        log_summary(run, {k: result[k] for k in SUMMARY_KEYS})
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_json_atomic(out / f"{arm}.json", result)
    keys = ("arm", "n", "accuracy", "accuracy_ci", "ranked_accuracy", "ranked_accuracy_ci")
    keys += ("train_tokens", "vs_base", "vs_base_ranked")
    print(json.dumps({k: result[k] for k in keys}))


# Table 1's columns, in the arm's W&B run summary
SUMMARY_KEYS = (
    "accuracy",
    "ranked_accuracy",
    "top3",
    "mrr",
    "fault_rate",
    "n",
    "n_scored",
    "train_tokens",
    "train_seconds",
    "vs_base",
    "vs_base_ranked",
    "base",
)


def run_arm(cfg, arm: str, source: str, domain: list[dict], spec, run) -> dict:
    """Train the arm from the base, score it and the base on the global test set."""
    from omegaconf import OmegaConf

    from cift.evaluate.build import build_evaluator, version_of
    from cift.evaluate.gate import case_scores
    from cift.evaluate.metrics import paired_diff_ci
    from cift.evaluate.suite import summary
    from cift.io.jsonl import read_jsonl_trusted
    from cift.tracking import lightning_loggers
    from cift.train import train_adapter

    exp, runs, data = cfg.experiment_name, Path(cfg.paths.runs), Path(cfg.paths.data)
    out = runs / exp / "table1"
    train = train_adapter(
        OmegaConf.to_container(cfg.train, resolve=True) | {"init": "fresh"},
        cfg.trainer,
        spec,
        domain,
        read_jsonl_trusted(data / "general" / "replay.jsonl"),
        system_prompt=cfg.system_prompt,
        out_dir=out / arm / "adapter",
        init_adapter=None,
        ckpt_dir=runs / ".ckpt" / exp / f"table1-{arm}",
        seed=cfg.seed,
        logger=lightning_loggers(cfg, "table1", arm, run),
    )
    ev = build_evaluator(cfg, read_jsonl_trusted(data / "global" / "records.jsonl"))
    test = {"global": read_jsonl_trusted(data / "global" / "test.jsonl")}
    model, _ = ev.evaluate_version(
        version_of(f"{exp}/table1/{arm}", out / arm / "adapter", spec), test
    )
    base, _ = ev.evaluate_version(version_of(f"{exp}/base", None, spec), test)

    def vs_base(metric: str) -> dict:
        """Paired difference to the base on the same global test cases, with its interval."""
        a, b = (case_scores(m["global"]["rows"], metric) for m in (model, base))
        ids = sorted(set(a) & set(b))
        return paired_diff_ci(
            [a[i] for i in ids],
            [b[i] for i in ids],
            n_boot=int(cfg.gate.bootstrap),
            seed=cfg.seed,
        )

    return {
        "arm": arm,
        "source": source,
        **summary(model["global"]),
        "n": train["n"],  # domain samples trained on (Table 1's n); n_scored = test cases
        "train_tokens": train["train_tokens"],
        "train_seconds": train["wall_seconds"],
        "base": summary(base["global"]),
        "vs_base": vs_base("generated"),  # generated-answer accuracy
        "vs_base_ranked": vs_base("ranked"),  # ranked accuracy (gold condition ranked first)
        "train": train,
    }


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
