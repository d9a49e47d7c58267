"""`train_adapter`: one LoRA fit (domain + replay data) -> one adapter folder + a training summary.

The Trainer comes from the `trainer/` config (`hydra.utils.instantiate`), so precision, devices,
strategy, gradient accumulation and clipping are config; a ModelCheckpoint writes `last.ckpt`
(adapter + optimiser state only) to `ckpt_dir`, and a killed fit with the same inputs resumes
from it. The checkpoint folder is removed once the adapter is saved.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from cift.models.adapter_format import check_base_hash
from cift.models.loading import resolve_precision
from cift.train.adapters import init_from_adapter, save_adapter
from cift.train.data import (
    SFTDataModule,
    batches_per_rank,
    mix_replay,
    replay_count,
    tokenize_samples,
)
from cift.train.module import LoRAModule, keep_activation_dtype, wrap_lora

INITS = ("production", "fresh")
RUN_FILE = "run.json"  # fingerprint of the inputs a checkpoint folder belongs to


def base_dtype(precision: Any) -> str:
    """The frozen base's weight dtype for a Lightning precision (LoRA weights stay fp32)."""
    p = str(precision)
    if p.startswith("bf16"):
        return "bfloat16"
    if p.startswith("16"):
        return "float16"
    return "float32"


class _Clock(L.Callback):
    """Seconds spent in the training loop, carried across resumes in the module's counters."""

    def on_train_start(self, trainer: L.Trainer, module: LoRAModule) -> None:
        self._t0, self._offset = time.perf_counter(), module.counters.get("seconds", 0.0)

    def on_train_batch_end(self, trainer: L.Trainer, module: LoRAModule, *args: Any) -> None:
        module.counters["seconds"] = self._offset + time.perf_counter() - self._t0


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Treat subnormal floats as zero while training. AdamW's second moments of LoRA weights
    fall below 1e-38 (squared tiny gradients), and x86 computes on subnormals about 100× slower:
    the optimizer step took 3.3 s of a ~13 s step on a 2-core CPU, 0.2 s with them flushed.
    Values that small are far below Adam's eps, so nothing the update uses changes."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _fingerprint(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _resume_path(ckpt_dir: Path, fingerprint: str) -> Path | None:
    """last.ckpt when it belongs to this exact run; a stale folder (other inputs) is cleared."""
    run_file, last = ckpt_dir / RUN_FILE, ckpt_dir / "last.ckpt"
    if run_file.is_file() and json.loads(run_file.read_text())["fingerprint"] == fingerprint:
        return last if last.is_file() else None
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True)
    run_file.write_text(json.dumps({"fingerprint": fingerprint}) + "\n")
    return None


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def _world_size(trainer_cfg: dict) -> int:
    """Ranks the configured Trainer trains on (1 where `devices` is not a count, e.g. "auto")."""
    devices, nodes = trainer_cfg.get("devices", 1), trainer_cfg.get("num_nodes", 1)
    count = (
        devices if isinstance(devices, int) else len(devices) if isinstance(devices, list) else 1
    )
    return max(1, count) * max(1, int(nodes or 1))


def steps_per_epoch(n_domain: int, cfg_train: Any, trainer_cfg: Any) -> int:
    """Optimizer steps of one epoch over `n_domain` domain samples and their replay mix: what
    Lightning counts as global steps (batches per rank over accumulate_grad_batches)."""
    cfg, tcfg = dict(_plain(cfg_train)), dict(_plain(trainer_cfg))
    n = n_domain + replay_count(n_domain, float(cfg.get("mix_ratio", 0.0)))
    batches = batches_per_rank(n, int(cfg["batch_size"]), _world_size(tcfg))
    return math.ceil(batches / int(tcfg.get("accumulate_grad_batches", 1) or 1))


def planned_steps(n_domain: int, cfg_train: Any, trainer_cfg: Any) -> int:
    """Optimizer steps `train_adapter` takes on `n_domain` domain samples: `train.epochs` full
    epochs, or `train.min_steps` when the epochs give fewer (see `epochs_and_max_steps`)."""
    cfg = dict(_plain(cfg_train))
    epochs, max_steps = epochs_and_max_steps(
        steps_per_epoch(n_domain, cfg, trainer_cfg), int(cfg["epochs"]), cfg.get("min_steps")
    )
    return max_steps if max_steps > 0 else epochs * steps_per_epoch(n_domain, cfg, trainer_cfg)


def epochs_and_max_steps(per_epoch: int, epochs: int, min_steps: int | None) -> tuple[int, int]:
    """(max_epochs, max_steps) for the Trainer. `train.min_steps` null: the epochs decide
    (max_steps -1). Set, and the epochs give fewer optimizer steps: as many epochs as it takes,
    stopped at exactly `min_steps` (a small selection trained for a large one's compute)."""
    if min_steps is None or epochs * per_epoch >= int(min_steps):
        return epochs, -1
    if int(min_steps) < 1 or per_epoch < 1:
        raise ValueError(f"train.min_steps={min_steps}: needs a positive count and data")
    return math.ceil(int(min_steps) / per_epoch), int(min_steps)


def build_trainer(
    trainer_cfg: Any,
    *,
    epochs: int,
    ckpt_dir: Path,
    every_n_steps: int,
    logger: Any = None,
    callbacks: list | None = None,
    max_steps: int = -1,
) -> L.Trainer:
    """The configured Trainer with max_epochs from train.epochs (max_steps from train.min_steps,
    see `epochs_and_max_steps`) and a last.ckpt checkpointer."""
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import ModelCheckpoint

    checkpoint = ModelCheckpoint(
        dirpath=str(ckpt_dir), save_last=True, save_top_k=0, every_n_train_steps=every_n_steps
    )
    return instantiate(
        OmegaConf.create(_plain(trainer_cfg)),
        max_epochs=epochs,
        max_steps=max_steps,
        callbacks=[checkpoint, _Clock(), *(callbacks or [])],
        logger=logger if logger is not None else False,
        enable_checkpointing=True,
        use_distributed_sampler=False,  # the length-grouped sampler splits batches across ranks
        default_root_dir=str(ckpt_dir),
    )


def train_adapter(
    cfg_train: dict | DictConfig,
    trainer_cfg: dict | DictConfig,
    model_spec: Any,
    domain_samples: list[dict],
    replay_samples: list[dict],
    *,
    system_prompt: str,
    out_dir: str | Path,
    init_adapter: str | Path | None,
    ckpt_dir: str | Path,
    seed: int,
    logger: Any = None,
    callbacks: list | None = None,
) -> dict:
    """Fit a LoRA adapter on domain + replay samples, save it to `out_dir`, return the summary.

    `train.init=production` starts from `init_adapter` (the deployed version; None = nothing
    deployed yet, so fresh); `fresh` starts from a zero adapter. `train.min_steps` (null: the
    epochs decide) trains at least that many optimizer steps. Summary: n (domain samples),
    replay, train_tokens (non-padding tokens the optimiser saw, replay included, all epochs),
    optimizer_steps, wall_seconds (training loop, s), tokens_per_s, final_loss (mean response-token
    loss of the last epoch), plus supervised_tokens, truncated, init, replay_counts.
    """
    cfg = dict(_plain(cfg_train))
    tcfg = dict(_plain(trainer_cfg))
    tcfg["precision"] = resolve_precision(
        str(tcfg.get("precision", "32-true")), str(tcfg.get("accelerator", "cpu"))
    )
    if cfg.get("init", "production") not in INITS:
        raise ValueError(f"train.init: {cfg.get('init')!r} is not one of {INITS}")
    L.seed_everything(seed, workers=True, verbose=False)
    loaded = model_spec.load(dtype=base_dtype(tcfg.get("precision", "32-true")))
    use_init = cfg.get("init", "production") == "production" and init_adapter is not None
    init_meta = check_base_hash(init_adapter, loaded.base_hash) if use_init else None

    samples, flags, replay_counts = mix_replay(
        domain_samples, replay_samples, float(cfg.get("mix_ratio", 0.0)), seed
    )
    examples = tokenize_samples(
        loaded.tokenizer, samples, system_prompt, int(cfg["max_length"]), replay_flags=flags
    )
    peft_model = wrap_lora(loaded.model, cfg["lora"])
    if use_init:
        init_from_adapter(peft_model, init_adapter, expected_base_hash=loaded.base_hash)
    if "mixed" in str(tcfg.get("precision", "")) and loaded.dtype != torch.float32:
        keep_activation_dtype(peft_model)
    peft_model.train()  # loaded in eval mode; Lightning keeps modes as it finds them (dropout)
    module = LoRAModule(peft_model, cfg)
    data = SFTDataModule(examples, int(cfg["batch_size"]), loaded.tokenizer.pad_token_id, seed)

    ckpt_dir = Path(ckpt_dir)
    fingerprint = _fingerprint(
        cfg, tcfg, loaded.base_hash, seed, system_prompt, init_meta, [e.input_ids for e in examples]
    )
    resume = _resume_path(ckpt_dir, fingerprint)
    every = int(cfg.get("ckpt_every_n_steps", 50))
    per_epoch = steps_per_epoch(len(domain_samples), cfg, tcfg)
    epochs, max_steps = epochs_and_max_steps(per_epoch, int(cfg["epochs"]), cfg.get("min_steps"))
    trainer = build_trainer(
        tcfg,
        epochs=epochs,
        ckpt_dir=ckpt_dir,
        every_n_steps=every,
        logger=logger,
        callbacks=callbacks,
        max_steps=max_steps,
    )
    with flush_denormals():
        trainer.fit(module, datamodule=data, ckpt_path=str(resume) if resume else None)
    if not trainer.state.finished:
        raise RuntimeError(f"training stopped early ({trainer.state.status}); no adapter saved")

    c = module.counters
    summed = trainer.strategy.reduce(  # every rank counted its own batches
        torch.tensor([float(c["tokens"]), float(c["supervised"])], device=module.device),
        reduce_op="sum",
    )
    tokens, supervised = (int(v) for v in summed.tolist())
    seconds = float(c.get("seconds", 0.0))
    final = module.last_epoch_loss
    summary = {
        "n": len(domain_samples),
        "replay": replay_counts["replay"],
        "train_tokens": tokens,
        "optimizer_steps": int(trainer.global_step),
        "epochs": epochs,  # train.epochs, or what train.min_steps took
        "min_steps": cfg.get("min_steps"),
        "wall_seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 2) if seconds > 0 else 0.0,
        "final_loss": None if final is None or math.isnan(final) else round(final, 6),
        "supervised_tokens": supervised,
        "truncated": sum(e.truncated for e in examples),
        "init": "production" if use_init else "fresh",
        "init_adapter": str(init_adapter) if use_init else None,
        "resumed": resume is not None,
        "replay_counts": replay_counts,
    }
    if trainer.is_global_zero:
        meta = {"train": summary, "lora": cfg["lora"], "seed": seed, "model": model_spec.name}
        save_adapter(peft_model, out_dir, base_hash=loaded.base_hash, metadata=meta)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return summary
