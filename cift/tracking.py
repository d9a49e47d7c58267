"""Experiment tracking: one W&B run per stage run, grouped by experiment, offline by default."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


class _NullRun:
    """Stands in for a tracker when logging is off (`logger=none`, or csv outside Lightning)."""

    offline = True

    def log(self, *_: Any, **__: Any) -> None:
        pass

    @property
    def summary(self) -> dict:
        return {}


def wandb_dir(cfg: DictConfig) -> Path:
    """Runs go under `$DVC_ROOT/logs/wandb`: queued experiments run in temp copies and keep them."""
    root = Path(os.environ.get("DVC_ROOT", "."))
    return (root / cfg.logger.get("dir", "logs/wandb")).resolve()


def _wandb_run_args(cfg: DictConfig, stage: str, name: str | None) -> dict:
    """One W&B run per stage execution, grouped by experiment, job_type = stage, offline unless
    the environment says otherwise; shared by `stage_run` and `lightning_logger`."""
    os.environ.setdefault("WANDB_MODE", cfg.logger.get("mode") or "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    folder = wandb_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "project": cfg.logger.project,
        "entity": cfg.logger.get("entity"),
        "group": cfg.experiment_name,
        "job_type": stage,
        "name": name or f"{cfg.experiment_name}/{stage}",
        "dir": str(folder),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "reinit": "finish_previous",
    }


@contextlib.contextmanager
def stage_run(cfg: DictConfig, stage: str, name: str | None = None) -> Iterator[Any]:
    """A tracker run for one stage execution; always finished, so sweeps never bleed together."""
    if cfg.logger.backend != "wandb":
        yield _NullRun()
        return
    import wandb

    run = wandb.init(**_wandb_run_args(cfg, stage, name))
    try:
        yield run
    finally:
        run.finish()


def lightning_logger(cfg: DictConfig, stage: str, name: str | None = None) -> Any:
    """Lightning logger for a training stage: W&B (grouped as in `stage_run`), CSV, or None."""
    backend = cfg.logger.backend
    if backend == "csv":
        from lightning.pytorch.loggers import CSVLogger

        root = Path(os.environ.get("DVC_ROOT", ".")) / cfg.logger.get("dir", "logs/csv")
        return CSVLogger(str(root.resolve()), name=name or f"{cfg.experiment_name}/{stage}")
    if backend != "wandb":
        return None
    from lightning.pytorch.loggers import WandbLogger

    args = _wandb_run_args(cfg, stage, name)
    return WandbLogger(save_dir=args.pop("dir"), **args)
