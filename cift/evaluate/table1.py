"""Table 1's setting, shared by the `table1@<arm>` stages and the learning curve so that a curve
point and an arm of the same size are the same experiment: an adapter trained from the base on
the first batch's data with the configured LoRA, epochs, replay mix and seed, scored on Table 1's
test set (data/global/table1_test.jsonl, the first batch's own distribution).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TEST = "table1"  # the split name of Table 1's test set in the evaluator's results


@dataclass
class Table1:
    """What every arm shares: the evaluator over Table 1's records, its test set, the replay
    pool and the base model's spec."""

    cfg: Any
    spec: Any
    evaluator: Any
    test: dict[str, list[dict]]
    replay: list[dict]

    @classmethod
    def load(cls, cfg: Any, spec: Any = None) -> Table1:
        """Reads what the DAG wrote under `paths.data` (general/replay.jsonl, global/table1_*)."""
        from hydra.utils import instantiate

        from cift.evaluate.build import build_evaluator
        from cift.io.jsonl import read_jsonl_trusted

        data = Path(cfg.paths.data)
        return cls(
            cfg=cfg,
            spec=spec if spec is not None else instantiate(cfg.model),
            evaluator=build_evaluator(
                cfg, read_jsonl_trusted(data / "global" / "table1_records.jsonl")
            ),
            test={TEST: read_jsonl_trusted(data / "global" / "table1_test.jsonl")},
            replay=read_jsonl_trusted(data / "general" / "replay.jsonl"),
        )

    def train(
        self,
        domain: Sequence[dict],
        out_dir: Path,
        ckpt_name: str,
        overrides: dict | None = None,
        logger: Any = None,
    ) -> dict:
        """`train_adapter`'s summary for an adapter trained fresh from the base on `domain`."""
        from omegaconf import OmegaConf

        from cift.train import train_adapter

        cfg = self.cfg
        return train_adapter(
            OmegaConf.to_container(cfg.train, resolve=True) | {"init": "fresh"} | (overrides or {}),
            cfg.trainer,
            self.spec,
            list(domain),
            self.replay,
            system_prompt=cfg.system_prompt,
            out_dir=out_dir,
            init_adapter=None,
            ckpt_dir=Path(cfg.paths.runs) / ".ckpt" / cfg.experiment_name / ckpt_name,
            seed=cfg.seed,
            logger=logger,
        )

    def score(self, name: str, adapter: Path | None) -> dict:
        """The evaluator's result on Table 1's test set for a version (adapter None = the base);
        answers come from the evaluation cache when they are there."""
        from cift.evaluate.build import version_of

        result, _ = self.evaluator.evaluate_version(version_of(name, adapter, self.spec), self.test)
        return result[TEST]
