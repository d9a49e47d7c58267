"""DVC stage `table1@<arm>`: the first batch's data, trained from the base in five ways and scored
on Table 1's test set (data/global/table1_test.jsonl: the first batch's own distribution).

Usage: python stages/table1.py ARM SOURCE MATCH (dvc.yaml passes all three)
- `base`: no training, the base model scored (SOURCE and MATCH name the test set, a dep only);
- `full`: every candidate that passed validation (SOURCE = data/batches/<first>/train.jsonl);
- `filtered`: filter@<first>'s selection (the configured filter: the top third by IFD by
  default), the same epochs (SOURCE = runs/<exp>/<first>/selected.jsonl);
- `random`: a seeded random subset of SOURCE (train.jsonl) as large as MATCH (the selection);
- `equal_compute`: SOURCE (the selection) trained for as many optimizer steps as MATCH
  (train.jsonl) takes under the same config (`train.min_steps`, computed from the sample counts,
  the replay mix and the batch size by `planned_steps`).
Same replay mix, LoRA config, learning rate and seed for every trained arm. The base model is
scored on the same cases (answers cached), so each arm carries the paired difference to the base
with its interval, for the generated-answer accuracy (`vs_base`) and the ranked accuracy
(`vs_base_ranked`). Writes runs/<experiment>/table1/<arm>/ (the adapter and cases.jsonl: each
test case's scores under both metrics, which the report pairs across arms for the claims) and
runs/<experiment>/table1/<arm>.json.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

ARMS = ("base", "full", "filtered", "random", "equal_compute")


def main(arm: str, source: str, match: str) -> None:
    from hydra.utils import instantiate

    from cift.config import load_params
    from cift.io.jsonl import write_json_atomic
    from cift.tracking import log_summary, stage_run

    if arm not in ARMS:
        raise SystemExit(f"table1: unknown arm {arm!r} (one of {', '.join(ARMS)})")
    started = time.perf_counter()
    cfg = load_params()
    out = Path(cfg.paths.runs) / cfg.experiment_name / "table1"
    spec = instantiate(cfg.model)
    # one W&B run per arm: Lightning's curves and the scores below go to the same run
    with stage_run(cfg, "table1", arm=arm) as run:
        result = run_arm(cfg, arm, source, match, spec, run)
        log_summary(run, {k: result[k] for k in SUMMARY_KEYS})
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_json_atomic(out / f"{arm}.json", result)
    keys = ("arm", "n", "accuracy", "accuracy_ci", "ranked_accuracy", "ranked_accuracy_ci")
    keys += ("train_tokens", "optimizer_steps", "vs_base", "vs_base_ranked")
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
    "optimizer_steps",
    "vs_base",
    "vs_base_ranked",
    "base",
)


def arm_data(cfg, arm: str, source: str, match: str) -> tuple[list[dict], dict]:
    """(domain samples, train config overrides) of an arm; see the module docstring."""
    from omegaconf import OmegaConf

    from cift.io.jsonl import read_jsonl_trusted

    if arm == "base":
        return [], {}
    domain = read_jsonl_trusted(source)
    if arm == "random":
        size = len(read_jsonl_trusted(match))
        rng = random.Random(f"{cfg.seed}-table1-random")
        keep = sorted(rng.sample(range(len(domain)), min(size, len(domain))))
        return [domain[i] for i in keep], {}
    if arm == "equal_compute":
        from cift.train.fit import planned_steps  # Lightning: only the arms that train

        train = OmegaConf.to_container(cfg.train, resolve=True)
        steps = planned_steps(len(read_jsonl_trusted(match)), train, cfg.trainer)
        return domain, {"min_steps": steps}
    return domain, {}


def run_arm(cfg, arm: str, source: str, match: str, spec, run) -> dict:
    """Train the arm from the base (not `base`), score it and the base on Table 1's test set."""
    from cift.evaluate.gate import case_scores
    from cift.evaluate.metrics import paired_diff_ci
    from cift.evaluate.suite import summary
    from cift.evaluate.table1 import Table1
    from cift.io.jsonl import write_jsonl_atomic
    from cift.tracking import dvclive_dir, lightning_loggers

    exp = cfg.experiment_name
    out = Path(cfg.paths.runs) / exp / "table1"
    table1 = Table1.load(cfg, spec)
    domain, overrides = arm_data(cfg, arm, source, match)
    train = None
    if arm == "base":
        (dvclive_dir("table1", arm) / "plots").mkdir(parents=True, exist_ok=True)  # no curves
    else:
        logger = lightning_loggers(cfg, "table1", arm, run)
        train = table1.train(domain, out / arm / "adapter", f"table1-{arm}", overrides, logger)
    base = table1.score(f"{exp}/base", None)
    model = base
    if train is not None:
        model = table1.score(f"{exp}/table1/{arm}", out / arm / "adapter")
    rows = model["rows"]
    scores = {m: case_scores(rows, m) for m in ("generated", "ranked")}
    write_jsonl_atomic(
        out / arm / "cases.jsonl",
        [{"id": r["id"], **{m: scores[m].get(r["id"]) for m in scores}} for r in rows],
    )

    def vs_base(metric: str) -> dict:
        """Paired difference to the base on the same test cases, with its interval."""
        a, b = (case_scores(m["rows"], metric) for m in (model, base))
        ids = sorted(set(a) & set(b))
        return paired_diff_ci(
            [a[i] for i in ids],
            [b[i] for i in ids],
            n_boot=int(cfg.gate.bootstrap),
            seed=cfg.seed,
        )

    return {
        "arm": arm,
        "source": source if train is not None else None,
        **summary(model),
        "n": len(domain),  # domain samples trained on (Table 1's n); n_scored = test cases
        "train_tokens": train["train_tokens"] if train else 0,
        "train_seconds": train["wall_seconds"] if train else 0.0,
        "optimizer_steps": train["optimizer_steps"] if train else 0,
        "base": summary(base),
        "vs_base": vs_base("generated"),  # generated-answer accuracy
        "vs_base_ranked": vs_base("ranked"),  # ranked accuracy (gold condition ranked first)
        "train": train,
    }


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
