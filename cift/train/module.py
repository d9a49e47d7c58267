"""The LoRA LightningModule: response-token loss, AdamW over the adapter only, warm-up + decay.

Speed: the LM head runs only on supervised positions (the prompt's logits are never needed), and
the loss is computed in fp32 from those logits. Checkpoints keep only the trainable (adapter)
tensors plus the run counters, so they are small and a killed fit resumes from them.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from cift.train.data import IGNORE, EmptyResponseMaskError

SCHEDULES = ("linear", "cosine")


def lora_config(lora: dict) -> Any:
    """`train.lora` {r, alpha, dropout, target_modules} -> a PEFT LoraConfig for a causal LM."""
    from peft import LoraConfig

    return LoraConfig(
        task_type="CAUSAL_LM",
        r=int(lora["r"]),
        lora_alpha=float(lora["alpha"]),
        lora_dropout=float(lora["dropout"]),
        target_modules=list(lora["target_modules"]),
    )


def wrap_lora(model: Any, lora: dict) -> Any:
    """The base model with fresh LoRA adapters (A random, B zero: the adapter starts as a no-op)."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(lora))


def keep_activation_dtype(peft_model: Any) -> None:
    """Under autocast, stop PEFT casting each LoRA input to the fp32 adapter dtype: the adapter
    matmuls then run in bf16 like the rest (fewer copies; dropout on half the bytes), while the
    adapter weights and their optimiser state stay fp32."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in peft_model.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = False


def _body_and_head(peft_model: Any) -> tuple[Any, Any] | None:
    """(decoder body, LM head) when logits are just head(hidden); None for models that post-process
    logits (soft-capping, scaling), which then take the full forward path."""
    causal = peft_model.get_base_model()
    cfg = causal.config
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logits_scaling", 1.0) != 1.0:
        return None
    get_decoder, head = getattr(causal, "get_decoder", None), causal.get_output_embeddings()
    body = get_decoder() if get_decoder else None
    return (body, head) if body is not None and head is not None else None


def supervised_loss(peft_model: Any, batch: dict, *, head_on_supervised: bool = True) -> tuple:
    """(mean loss over supervised tokens, number of supervised tokens), the loss in fp32.

    Position t predicts token t+1; labels are -100 on the prompt and on padding."""
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    n = int(keep.sum())
    if n == 0:
        raise EmptyResponseMaskError("batch has zero supervised tokens")
    parts = _body_and_head(peft_model) if head_on_supervised else None
    if parts is None:
        out = peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        logits = out.logits[:, :-1][keep]
    else:
        body, head = parts
        hidden = body(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
        logits = head(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), targets[keep]), n


def lr_lambda(warmup: int, total: int, schedule: str):
    """Linear warm-up over `warmup` steps, then linear or cosine decay to 0 at `total` steps."""
    if schedule not in SCHEDULES:
        raise ValueError(f"train.schedule: {schedule!r} is not one of {SCHEDULES}")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - progress

    return factor


class LoRAModule(L.LightningModule):
    """Causal-LM LoRA fine-tuning of a PEFT model on response tokens only."""

    def __init__(self, peft_model: Any, cfg_train: dict) -> None:
        super().__init__()
        self.model = peft_model
        self.lr = float(cfg_train["lr"])
        self.weight_decay = float(cfg_train.get("weight_decay", 0.0))
        self.warmup_ratio = float(cfg_train.get("warmup_ratio", 0.0))
        self.schedule = str(cfg_train.get("schedule", "linear"))
        self.head_on_supervised = bool(cfg_train.get("head_on_supervised", True))
        self.strict_loading = False  # checkpoints hold the adapter only
        # run counters, saved in checkpoints so a resumed fit reports the whole run
        self.counters = {
            "tokens": 0,
            "supervised": 0,
            "loss_epoch": -1,  # the epoch the two sums below belong to
            "epoch_loss": 0.0,
            "epoch_sup": 0,
        }

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, n_sup = supervised_loss(self.model, batch, head_on_supervised=self.head_on_supervised)
        tokens = int(batch["attention_mask"].sum())
        c = self.counters
        if c["loss_epoch"] != self.current_epoch:  # survives a resume at any point of an epoch
            c["loss_epoch"], c["epoch_loss"], c["epoch_sup"] = self.current_epoch, 0.0, 0
        c["tokens"] += tokens
        c["supervised"] += n_sup
        c["epoch_loss"] += float(loss.detach()) * n_sup
        c["epoch_sup"] += n_sup
        bs = batch["input_ids"].shape[0]
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=bs)
        self.log("train/tokens", float(c["tokens"]), batch_size=bs)
        return loss

    @property
    def last_epoch_loss(self) -> float | None:
        """Mean response-token loss of the latest epoch (token-weighted), None before any step."""
        c = self.counters
        return c["epoch_loss"] / c["epoch_sup"] if c["epoch_sup"] else None

    def on_train_epoch_end(self) -> None:
        if self.last_epoch_loss is not None:
            self.log("train/epoch_loss", self.last_epoch_loss)

    def configure_optimizers(self) -> dict:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("no trainable parameters (LoRA adapters missing?)")
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        total = self.total_steps()
        warmup = math.ceil(self.warmup_ratio * total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(warmup, total, self.schedule)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def total_steps(self) -> int:
        """Optimizer steps of the whole fit, from the data module's batch count.

        Not `trainer.estimated_stepping_batches`: it builds the train loader before a checkpoint
        is restored, so the loader's saved position would never be loaded."""
        trainer = self.trainer
        data = trainer.datamodule
        if data is None or not hasattr(data, "batches_per_epoch"):
            return max(1, int(trainer.estimated_stepping_batches))
        per_epoch = math.ceil(
            data.batches_per_epoch(trainer.world_size) / trainer.accumulate_grad_batches
        )
        total = per_epoch * trainer.max_epochs if trainer.max_epochs not in (None, -1) else 0
        if trainer.max_steps not in (None, -1):
            total = min(total, trainer.max_steps) if total else trainer.max_steps
        return max(1, total)

    def trainable_keys(self) -> set[str]:
        return {name for name, p in self.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep = self.trainable_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["cift_counters"] = dict(self.counters)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        missing = self.trainable_keys() - set(checkpoint["state_dict"])
        if missing:
            raise ValueError(
                f"checkpoint lacks {len(missing)} adapter tensors (e.g. {sorted(missing)[0]}): "
                "it was written for a different LoRA configuration"
            )
        self.counters.update(checkpoint.get("cift_counters", {}))
