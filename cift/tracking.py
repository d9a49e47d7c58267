"""Experiment tracking: one W&B run per stage run (online when the user is logged in, offline
otherwise), tagged with the keys a comparison needs, plus DVCLive training curves at fixed paths.

Every run carries the same comparison keys in its config and its tags (`run_keys`): the
experiment, the arm (`chain`, `select_static`, or a Table 1 arm), the filter, the proxy mode, the
profile, the batch and the DVC experiment name, so a W&B workspace or report can group full vs
filtered and filter vs select_static runs apart (cift.report.wandb_report does).
"""

from __future__ import annotations

import contextlib
import functools
import netrc
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

# The comparison keys, in the order their tags are written.
RUN_KEYS = ("experiment", "arm", "filter", "proxy.mode", "profile", "batch", "dvc_exp", "stage")
# already in the resolved config as nested values (filter.name, proxy.mode): not set again
NESTED = {"filter": "filter.name", "proxy.mode": "proxy.mode"}
CHAIN = "chain"  # the arm of the continual chain's own stages
DVCLIVE_ROOT = "dvclive"  # <root>/<stage>/<batch or arm>: fixed paths, the same in every exp


class _NullRun:
    """Stands in for a tracker when logging is off (`logger=none`, csv, or WANDB_MODE=disabled)."""

    offline = True

    def __init__(self) -> None:
        self.summary: dict = {}
        self.config: dict = {}
        self.tags: tuple = ()

    def log(self, *_: Any, **__: Any) -> None:
        pass


def wandb_dir(cfg: DictConfig) -> Path:
    """Runs go under `$DVC_ROOT/logs/wandb`: queued experiments run in temp copies and keep them.
    wandb itself writes each run to `<this>/wandb/{offline-,}run-<time>-<id>/`."""
    root = Path(os.environ.get("DVC_ROOT", "."))
    return (root / cfg.logger.get("dir", "logs/wandb")).resolve()


def wandb_logged_in(env: Mapping[str, str] | None = None) -> bool:
    """Whether W&B has an API key without asking the network: WANDB_API_KEY, or the netrc entry
    `wandb login` writes for the W&B host (WANDB_BASE_URL, default api.wandb.ai)."""
    env = os.environ if env is None else env
    if env.get("WANDB_API_KEY"):
        return True
    host = urlparse(env.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or ""
    path = Path(env.get("NETRC") or Path.home() / ".netrc").expanduser()
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def wandb_mode(cfg: DictConfig, env: Mapping[str, str] | None = None) -> str:
    """WANDB_MODE when set; else `logger.mode` unless it is `auto`; else online exactly when
    the user is logged in (an API key is present), offline otherwise."""
    env = os.environ if env is None else env
    configured = env.get("WANDB_MODE") or cfg.logger.get("mode") or "auto"
    if configured != "auto":
        return configured
    return "online" if wandb_logged_in(env) else "offline"


def run_keys(cfg: DictConfig, stage: str, batch: str | None = None, arm: str | None = None) -> dict:
    """The comparison keys of one stage run; `tags` renders them, the run config holds them
    (`filter` and `proxy.mode` as the config's own `filter.name` and `proxy.mode`)."""
    return {
        "experiment": cfg.experiment_name,
        "arm": arm or CHAIN,
        "filter": OmegaConf.select(cfg, "filter.name", default=None),
        "proxy.mode": OmegaConf.select(cfg, "proxy.mode", default=None),
        "profile": OmegaConf.select(cfg, "profile_name", default=None),
        "batch": batch,
        "dvc_exp": os.environ.get("DVC_EXP_NAME") or None,
        "stage": stage,
    }


def tags(keys: Mapping[str, Any]) -> list[str]:
    """`key:value` tags (W&B allows 64 characters each), unset keys left out."""
    return [f"{k}:{keys[k]}"[:64] for k in RUN_KEYS if keys.get(k) is not None]


def run_name(keys: Mapping[str, Any]) -> str:
    """experiment/stage[/batch or arm][ (dvc exp)]: distinct for every stage run of a DAG."""
    part = keys["batch"] or (keys["arm"] if keys["arm"] != CHAIN else None)
    name = "/".join(p for p in (keys["experiment"], keys["stage"], part) if p)
    return f"{name} ({keys['dvc_exp']})" if keys.get("dvc_exp") else name


def _wandb_run_args(
    cfg: DictConfig, stage: str, batch: str | None = None, arm: str | None = None
) -> dict:
    """wandb.init's arguments for one stage run: grouped by experiment, job_type = stage, the
    resolved config plus the comparison keys, and those keys as tags."""
    os.environ.setdefault("WANDB_SILENT", "true")
    folder = wandb_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    keys = run_keys(cfg, stage, batch, arm)
    config = OmegaConf.to_container(cfg, resolve=True)
    return {
        "project": cfg.logger.project,
        "entity": cfg.logger.get("entity"),
        "group": cfg.experiment_name,
        "job_type": stage,
        "name": run_name(keys),
        "tags": tags(keys),
        "dir": str(folder),
        "mode": wandb_mode(cfg),
        "config": config | {k: v for k, v in keys.items() if k not in NESTED},
        "reinit": "finish_previous",
    }


def tracking_on(cfg: DictConfig) -> bool:
    """W&B runs are made for `logger=wandb` on the launching process only (a DDP/FSDP worker
    that Lightning starts has LOCAL_RANK/RANK > 0), and not at all under WANDB_MODE=disabled
    (tests, CI), where not even wandb is imported: that costs a second per stage."""
    ranks = (os.environ.get(k, "0") for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))
    rank_zero = all(r in ("", "0") for r in ranks)
    on = cfg.logger.backend == "wandb" and os.environ.get("WANDB_MODE") != "disabled"
    return on and rank_zero


@contextlib.contextmanager
def stage_run(
    cfg: DictConfig, stage: str, batch: str | None = None, arm: str | None = None
) -> Iterator[Any]:
    """A tracker run for one stage execution; always finished, so sweeps never bleed together.
    An online run that cannot start (no network, a revoked key) logs offline instead: tracking
    never fails a stage."""
    if not tracking_on(cfg):
        yield _NullRun()
        return
    import wandb

    args = _wandb_run_args(cfg, stage, batch, arm)
    try:
        run = wandb.init(**args)
    except Exception as exc:  # wandb raises CommError, UsageError, timeouts...
        if args["mode"] != "online":
            raise
        print(
            f"W&B: online run failed ({type(exc).__name__}: {exc}); logging offline",
            file=sys.stderr,
        )
        run = wandb.init(**(args | {"mode": "offline"}))
    try:
        yield run
    finally:
        run.finish()


def flat_numbers(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float | int]:
    """Numeric leaves of a nested dict as `a/b/c` keys (bools as 0/1): what a summary can hold."""
    out: dict[str, float | int] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out |= flat_numbers(value, f"{name}/")
        elif isinstance(value, bool):
            out[name] = int(value)
        elif isinstance(value, int | float):
            out[name] = value
    return out


def log_summary(run: Any, metrics: Mapping[str, Any], **labels: Any) -> dict:
    """The stage's headline metrics into the run summary (what tables and bar plots read);
    `labels` are extra non-numeric values (versions, decisions). Returns what was written."""
    summary = flat_numbers(metrics) | {k: v for k, v in labels.items() if v is not None}
    run.summary.update(summary)
    return summary


def dvclive_dir(stage: str, part: str) -> Path:
    """DVCLive's folder for a training run: `dvclive/<stage>/<batch or arm>` under the stage's
    working directory, a fixed path in every experiment so `dvc plots diff` lines the loss curves
    up. dvc.yaml declares its `plots/` (DVCLive's `plots/metrics/train/loss.tsv`, …) as the
    stage's plots. Not under DVC_ROOT: a queued experiment runs in a temporary copy while DVC_ROOT
    names the workspace, and its declared outputs must be written in the copy."""
    return Path.cwd() / DVCLIVE_ROOT / stage / part


@functools.cache
def _dvclive_logger_class() -> type:
    """DVCLive's Lightning logger minus the `inspect.stack()` it runs on every unsynced call to
    decide whether to sync (1.2 s a call on a 2-core machine, so seconds per logged step);
    syncing each time instead costs a small summary write (no report, no dvc.yaml)."""
    from dvclive.lightning import DVCLiveLogger

    class Logger(DVCLiveLogger):
        def log_metrics(self, metrics: Any, step: int | None = None, sync: bool = True) -> None:
            super().log_metrics(metrics, step, sync=True)

    return Logger


def lightning_loggers(cfg: DictConfig, stage: str, part: str, run: Any = None) -> list:
    """Lightning loggers for a training stage: DVCLive's curves at `dvclive_dir(stage, part)`
    (always: dvc.yaml declares them as plots), plus W&B into the stage's own run (`run` from
    `stage_run`: one run per stage, never a second one by Lightning) or a CSV log."""
    folder = dvclive_dir(stage, part)
    (folder / "plots").mkdir(parents=True, exist_ok=True)  # dvc.yaml's plots, even if empty
    # save_dvc_exp=False, dvcyaml=None: the DAG's dvc.yaml declares the plots; DVCLive neither
    # commits an experiment of its own nor rewrites dvc.yaml
    loggers: list = [
        _dvclive_logger_class()(run_name=part, dir=str(folder), save_dvc_exp=False, dvcyaml=None)
    ]
    if cfg.logger.backend == "csv":
        from lightning.pytorch.loggers import CSVLogger

        root = Path(os.environ.get("DVC_ROOT", ".")) / cfg.logger.get("dir", "logs/csv")
        loggers.append(CSVLogger(str(root.resolve()), name=f"{cfg.experiment_name}/{stage}/{part}"))
    elif run is not None and not isinstance(run, _NullRun):
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(WandbLogger(experiment=run))
    return loggers
