"""Per-sample LoRA gradients, projected to `dim` numbers each, from batched backward passes.

One forward/backward per batch: every LoRA matrix is an nn.Linear, so a sample's gradient of its
weight is Σ_t grad_output[t] ⊗ input[t] over that sample's tokens (the per-sample-gradient trick
Opacus uses); the batch loss is the sum of per-sample mean losses, so the rows never mix. Each
matrix's gradient goes through a seeded CountSketch (a random ±1 projection that never builds a
numel × dim matrix) and the sketches add up into one `dim`-vector per sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from cift.progress import progress
from cift.train.data import IGNORE, Example, collate


class _Sketch:
    def __init__(self, numel: int, dim: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.bucket = torch.randint(0, dim, (numel,), generator=g)
        self.sign = torch.randint(0, 2, (numel,), generator=g).float() * 2 - 1
        self.dim = dim

    def __call__(self, grads: torch.Tensor) -> torch.Tensor:
        flat = grads.flatten(1).float() * self.sign
        return torch.zeros(flat.shape[0], self.dim).index_add_(1, self.bucket, flat)


def lora_linears(peft_model: Any) -> list[tuple[str, torch.nn.Linear]]:
    """The LoRA A and B matrices (trainable nn.Linear modules), in a stable order."""
    return [
        (name, m)
        for name, m in peft_model.named_modules()
        if isinstance(m, torch.nn.Linear)
        and (".lora_A." in name or ".lora_B." in name)
        and m.weight.requires_grad
    ]


def gradient_sketches(
    peft_model: Any,
    examples: Sequence[Example],
    pad_id: int,
    dim: int = 256,
    seed: int = 0,
    batch_size: int = 8,
) -> np.ndarray:
    """(n × dim) float32: the projected gradient of each example's mean answer-token loss."""
    layers = lora_linears(peft_model)
    if not layers:
        raise ValueError("gradient_sketches: the model has no trainable LoRA matrices")
    sketches = [_Sketch(m.weight.numel(), dim, seed * 7919 + i) for i, (_, m) in enumerate(layers)]
    out = np.zeros((len(examples), dim), dtype=np.float32)
    rows = torch.zeros(0)

    def forward_hook(i: int):
        def hook(_m, inputs, output):
            x = inputs[0].detach()

            def on_grad(grad_out: torch.Tensor) -> None:
                nonlocal rows
                rows = rows + sketches[i](torch.einsum("bto,bti->boi", grad_out.float(), x.float()))

            output.register_hook(on_grad)

        return hook

    handles = [m.register_forward_hook(forward_hook(i)) for i, (_, m) in enumerate(layers)]
    was_training = peft_model.training
    peft_model.eval()  # no dropout: the gradient of the model as it is
    try:
        order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
        starts = range(0, len(order), batch_size)
        for start in progress(starts, desc="G-DIG gradients", unit="batch"):
            idx = order[start : start + batch_size]
            batch = collate([examples[i] for i in idx], pad_id)
            rows = torch.zeros(len(idx), dim)
            peft_model.zero_grad(set_to_none=True)
            logits = peft_model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits[:, :-1]
            labels = batch["labels"][:, 1:]
            token_loss = torch.nn.functional.cross_entropy(
                logits.float().transpose(1, 2), labels, ignore_index=IGNORE, reduction="none"
            )
            counts = (labels != IGNORE).sum(dim=1).clamp(min=1)
            (token_loss.sum(dim=1) / counts).sum().backward()
            out[idx] = rows.numpy()
    finally:
        for h in handles:
            h.remove()
        peft_model.zero_grad(set_to_none=True)
        peft_model.train(was_training)
    return out
