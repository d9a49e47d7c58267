"""The roofline of `cift bench ifd`: how fast this CPU multiplies at the model's own matmul shapes.

A square 4096² `torch.mm` says little about a 135M model whose matmuls are 576 wide: its rate
moved by 2× between runs and it is not what the engine executes. The probe times, with the
engine's dtype and thread count, exactly the weight matmuls one token costs:
- per layer, `F.linear` of a `rows`-token activation with the q, k, v, o projections and the MLP's
  gate, up and down weights (SmolLM2-135M: 576→576, 576→192, 576→192, 576→576, 576→1536 twice,
  1536→576), times the number of layers;
- the LM head (hidden → vocabulary) on `HEAD_CHUNK` rows, weighted by the fraction of tokens whose
  log-prob is scored (the engine computes the head only there).
One run times all of them once; after warm-up runs the best of `repeats` runs is the roofline and
the spread (best, median, worst) is reported so a noisy machine shows as such. Attention-score
products (QKᵀ, AV), norms, activations and rotary embeddings are NOT counted: they are work the
engine does on top, so the fraction it reaches is conservative.

    flops_per_token       = 2 × (weights of the body's linear layers) + 2 × head × scored/all
    roofline_tokens_per_s = 1 / (time of one token's matmuls at the probe's best run)
    matmul_flops          = flops_per_token × roofline_tokens_per_s

The same probe, without a head, is the roofline of the sentence encoder (`cift bench
diversity`). `speedup_ceiling` = roofline / reference rate is the most any engine could gain over
the reference on this CPU; where it is below a bench's nominal speedup (fp32 only, no fast bf16),
the bench asks for `ROOFLINE_FRACTION` of the ceiling instead (`speedup_target`).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

ROOFLINE_FRACTION = 0.65  # of the roofline an engine must reach (and of the speedup ceiling)


def speedup_target(nominal: float, ceiling: float) -> float:
    """The speedup a bench asks for: `nominal`, or `ROOFLINE_FRACTION` of the ceiling (roofline /
    reference, measured in the same run) where even a perfect engine could not reach `nominal`."""
    return min(nominal, ROOFLINE_FRACTION * ceiling)


@dataclass(frozen=True)
class MatmulShapes:
    """(in, out) of every linear layer in one transformer layer, the layer count and the head
    (None for an encoder that pools instead)."""

    layer: tuple[tuple[int, int], ...]
    layers: int
    head: tuple[int, int] | None

    @property
    def layer_params(self) -> int:
        return sum(i * o for i, o in self.layer)

    def flops_per_token(self, scored_fraction: float) -> float:
        """2 × body weights + 2 × head weights × the scored fraction of tokens."""
        head = self.head[0] * self.head[1] if self.head else 0
        return 2.0 * self.layers * self.layer_params + 2.0 * head * scored_fraction


def model_shapes(lm: Any) -> MatmulShapes:
    """The matmul shapes of a causal LM (`lm.model.layers`, `lm.lm_head`) or a BERT-style encoder
    (`lm.encoder.layer`, no head), read from its modules (every `nn.Linear` of layer 0)."""
    import torch

    layers = lm.model.layers if hasattr(lm, "model") else lm.encoder.layer
    shapes = tuple(
        (m.in_features, m.out_features)
        for m in layers[0].modules()
        if isinstance(m, torch.nn.Linear)
    )
    if not shapes:
        raise TypeError(f"{type(lm).__name__}: no nn.Linear in its first layer")
    head = lm.lm_head.weight.shape if hasattr(lm, "lm_head") else None  # (vocab, hidden)
    return MatmulShapes(
        layer=shapes, layers=len(layers), head=(int(head[1]), int(head[0])) if head else None
    )


@dataclass(frozen=True)
class Probe:
    """Per-token matmul rates (tokens/s) of every timed run; the best one is the roofline."""

    flops_per_token: float
    rates: tuple[float, ...]
    rows: int
    threads: int

    @property
    def best_tokens_per_s(self) -> float:
        return max(self.rates)

    @property
    def median_tokens_per_s(self) -> float:
        return statistics.median(self.rates)

    @property
    def worst_tokens_per_s(self) -> float:
        return min(self.rates)

    @property
    def flops(self) -> float:
        """FLOP/s of the best run."""
        return self.flops_per_token * self.best_tokens_per_s

    @property
    def spread(self) -> float:
        """(best − worst) / best of the timed runs' rates."""
        return 1.0 - self.worst_tokens_per_s / self.best_tokens_per_s

    def summary(self) -> str:
        f = self.flops_per_token / 1e12
        return (
            f"{self.flops / 1e12:.3f} TFLOP/s best of {len(self.rates)} runs (median "
            f"{f * self.median_tokens_per_s:.3f}, worst {f * self.worst_tokens_per_s:.3f}, "
            f"spread {self.spread:.0%}) = {self.best_tokens_per_s:.0f} tok/s at "
            f"{self.rows} rows, {self.threads} threads"
        )


def merge_probes(probes: list[Probe]) -> Probe:
    """One probe holding the runs of several (e.g. timed before and after the engine)."""
    first = probes[0]
    if any(p.flops_per_token != first.flops_per_token for p in probes):
        raise ValueError("probes of different token costs cannot be merged")
    rates = tuple(r for p in probes for r in p.rates)
    return Probe(first.flops_per_token, rates, first.rows, first.threads)


def matmul_probe(
    shapes: MatmulShapes,
    scored_fraction: float,
    *,
    dtype: Any,
    rows: int = 2048,
    head_rows: int = 512,
    repeats: int = 7,
    warmup: int = 2,
) -> Probe:
    """Time one token's worth of the model's matmuls (see the module docstring)."""
    import torch

    if not 0.0 <= scored_fraction <= 1.0:
        raise ValueError(f"scored_fraction must be in [0, 1], got {scored_fraction}")
    gen = torch.Generator().manual_seed(0)
    inputs = {i: torch.randn(rows, i, generator=gen).to(dtype) for i, _ in shapes.layer}
    weights = [torch.randn(o, i, generator=gen).to(dtype) * 0.02 for i, o in shapes.layer]
    head = hx = None
    if shapes.head:
        h_in, vocab = shapes.head
        head = torch.randn(vocab, h_in, generator=gen).to(dtype) * 0.02
        hx = torch.randn(head_rows, h_in, generator=gen).to(dtype)

    def one_run() -> float:
        """Seconds per token of the whole model's matmuls."""
        with torch.inference_mode():
            t0 = time.perf_counter()
            for w in weights:
                torch.nn.functional.linear(inputs[w.shape[1]], w)
            t_layer = time.perf_counter() - t0
            t_head = 0.0
            if head is not None:
                t0 = time.perf_counter()
                torch.nn.functional.linear(hx, head)
                t_head = time.perf_counter() - t0
        return shapes.layers * t_layer / rows + scored_fraction * t_head / head_rows

    for _ in range(warmup):
        one_run()
    rates = tuple(1.0 / one_run() for _ in range(repeats))
    return Probe(
        flops_per_token=shapes.flops_per_token(scored_fraction),
        rates=rates,
        rows=rows,
        threads=torch.get_num_threads(),
    )
