"""The reference IFD loop: what Cherry_LLM and Superfiltering do, kept to measure the engine.

Per sample, two forward passes `model(input_ids, labels=...)` (prompt positions labelled −100),
fp32, full-vocabulary logits at every position, one sample at a time, default threads; the loss
HF returns is the mean NLL over y, so PPL = exp(loss). The token sequences are the engine's own
(`PromptBuilder`), so any difference between the two is numerics, not tokenisation.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from cift.scoring.ifd import Prepared, PromptBuilder, result_row, unwrap_causal_lm


def reference_scores_prepared(
    model: Any, prepared: list[Prepared], *, progress: bool = False
) -> list[dict]:
    """Score already-tokenised samples with the per-sample loop (the model's dtype is used as is:
    load it in fp32 for the reference)."""
    import torch

    lm = unwrap_causal_lm(model)
    device = next(lm.parameters()).device
    out = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for n, p in enumerate(prepared, start=1):
            losses = []
            for ids, prefix in ((p.cond, p.cond_prefix), (p.direct, p.direct_prefix)):
                input_ids = torch.tensor([ids], dtype=torch.long, device=device)
                labels = input_ids.clone()
                labels[0, :prefix] = -100
                losses.append(float(lm(input_ids=input_ids, labels=labels).loss))
            out.append(result_row(p, losses[0], losses[1]))
            if progress and (n % 16 == 0 or n == len(prepared)):
                rate = sum(q.tokens for q in prepared[:n]) / (time.perf_counter() - t0)
                print(f"reference: {n}/{len(prepared)} samples, {rate:.0f} tok/s", file=sys.stderr)
    return out


def reference_scores(
    model: Any,
    tokenizer: Any,
    samples: list[dict],
    *,
    system_prompt: str,
    template: str = "chat",
    max_length: int = 1024,
) -> list[dict]:
    """The same dicts as `cift.scoring.ifd.score_ifd`, computed the slow, obvious way."""
    builder = PromptBuilder(
        tokenizer, system_prompt=system_prompt, template=template, max_length=max_length
    )
    return reference_scores_prepared(model, builder.prepare(samples))
