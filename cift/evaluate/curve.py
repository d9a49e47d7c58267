"""The full arm's learning curve: Table 1's data (the first batch's training candidates), its
first n samples for each n, trained from the base as Table 1 trains its arms (same LoRA, epochs,
replay mix and seed) and scored on Table 1's test set. Accuracy against samples and optimizer
steps is what a profile's sizes are chosen from, before looking at any comparison they decide.

Reads what the DAG wrote (data/batches/<first>/train.jsonl, data/general/replay.jsonl,
data/global/table1_*.jsonl); adapters go to runs/<exp>/curve/n<N>/, answers to the evaluation
cache (the base and a repeated size cost nothing the second time).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

# the scalars of a curve row (the evaluator's summary holds per-case rows too)
KEYS = ("accuracy", "accuracy_ci", "ranked_accuracy", "ranked_accuracy_ci", "fault_rate")


def learning_curve(cfg: DictConfig, sizes: Sequence[int]) -> list[dict[str, Any]]:
    """One row per size (0 = the base): n, optimizer_steps, train_tokens, train_seconds and the
    accuracies on Table 1's test set with their intervals."""
    from cift.evaluate.suite import summary
    from cift.evaluate.table1 import Table1
    from cift.io.jsonl import read_jsonl_trusted

    exp, runs, data = cfg.experiment_name, Path(cfg.paths.runs), Path(cfg.paths.data)
    domain = read_jsonl_trusted(data / "batches" / cfg.data.batches[0].name / "train.jsonl")
    too_big = [n for n in sizes if n < 1 or n > len(domain)]
    if too_big:
        raise ValueError(f"--sizes {too_big}: batch 1 has {len(domain)} training samples")
    table1 = Table1.load(cfg)

    def scored(name: str, adapter: Path | None) -> dict[str, Any]:
        return {k: summary(table1.score(name, adapter))[k] for k in KEYS}

    rows = [{"n": 0, "optimizer_steps": 0, "train_tokens": 0, "train_seconds": 0.0}]
    rows[0] |= scored(f"{exp}/base", None)
    for n in sizes:
        out = runs / exp / "curve" / f"n{n}"
        train = table1.train(domain[:n], out, f"curve-n{n}")
        rows.append(
            {
                "n": n,
                "optimizer_steps": train["optimizer_steps"],
                "train_tokens": train["train_tokens"],
                "train_seconds": train["wall_seconds"],
            }
            | scored(f"{exp}/curve/n{n}", out)
        )
    return rows
