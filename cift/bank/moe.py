"""Fitting a mixture of LoRA experts' routers on the bank's K-shot data (the model code, loading
and saving live in `cift.models.moe`)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cift.models.moe import load_balancing_loss, moe_layers, record_gates


def train_router(
    model: nn.Module,
    tokenizer: Any,
    samples: Sequence[dict],
    system_prompt: str,
    *,
    epochs: int = 3,
    lr: float = 5e-3,
    aux_weight: float = 0.01,
    batch_size: int = 4,
    max_length: int = 512,
    train_experts: bool = False,
    seed: int = 0,
) -> dict:
    """Fit the routers (and the experts when `train_experts`) on `samples`: LM loss on the
    answers + `aux_weight` × the load-balancing loss. Length-sorted batches, shuffled per epoch."""
    from cift.train.data import collate, tokenize_samples

    for layer in moe_layers(model):
        layer.A.requires_grad_(train_experts)
        layer.B.requires_grad_(train_experts)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    examples = sorted(
        tokenize_samples(tokenizer, samples, system_prompt, max_length),
        key=lambda e: len(e.input_ids),
    )
    batches = [examples[i : i + batch_size] for i in range(0, len(examples), batch_size)]
    rng = random.Random(seed)
    model.train()
    record_gates(model, True)
    history = []
    for _ in range(epochs):
        rng.shuffle(batches)
        for batch in batches:
            inputs = collate(batch, tokenizer.pad_token_id)
            opt.zero_grad()
            lm = model(**inputs).loss
            aux = load_balancing_loss(model)
            (lm + aux_weight * aux).backward()
            opt.step()
            history.append({"lm": float(lm.detach()), "aux": float(aux.detach())})
    record_gates(model, False)
    model.eval()
    return {
        "steps": len(history),
        "final_lm_loss": history[-1]["lm"] if history else None,
        "final_aux": history[-1]["aux"] if history else None,
        "trainable_parameters": sum(p.numel() for p in params),
    }
