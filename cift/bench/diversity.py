"""`cift bench diversity`: the batched embedding engine vs the per-response fp32 reference.

Responses are windows of 3–12 sentences from expert reference answers to sampled patient records
(deterministic for a seed). The reference is what a straightforward implementation does: one fp32
`model.encode(sentences)` call per response. Both sides compute Div for every response with the
same model in the same process and the same torch thread count (`--threads`, measured by
`cift.scoring.threads` unless given). After one untimed warm-up pass over every batch shape, the
engine pass is repeated for at least `--min-engine-s` seconds (default 10) of timed work, half
before and half after the reference, so load from other jobs on a shared CPU affects both sides
alike and one short pass does not make the ratio noisy; the engine's time per pass is the total
over its passes. Progress goes to stderr; the last stdout line is one JSON object.

The roofline (`cift.bench.roofline`, the encoder's own linear layers at 2048 rows, best of warmed
runs before and after the engine) bounds both sides: `roofline_fraction` = distinct tokens per
second of the engine / the roofline's tokens per second; `speedup_ceiling` = reference time / the
time the roofline needs for the distinct tokens (what a perfect engine would gain). Exit 1 when
max_abs_diff > 0.01, roofline_fraction < 0.65 or speedup < min(5, 0.65 × speedup_ceiling): in
fp32 (no fast bf16) 5× is beyond any engine's reach.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from typing import Any

from cift.bench.roofline import ROOFLINE_FRACTION, speedup_target
from cift.scoring.embeddings import (
    compute_dtype,
    diversity_score,
    resolve_model,
    sentence_embeddings,
    tokenize,
)

MIN_SPEEDUP = 5.0
MAX_ABS_DIFF = 0.01


def build_responses(n: int = 256, seed: int = 0) -> list[list[str]]:
    """`n` responses as sentence lists: a random window of 3–12 sentences of the reference
    answer (numbered steps, Diagnosis, Advice) to a record of a random KB condition."""
    from cift.data.answer import render_answer
    from cift.data.records import sample_record
    from cift.data.reference import reference_answer
    from cift.filters.sentences import split_sentences
    from cift.kb import load_kb

    kb = load_kb()
    rng = random.Random(seed)
    responses: list[list[str]] = []
    while len(responses) < n:
        i = len(responses)
        record = sample_record(kb, rng.choice(kb.names), rng, record_id=f"r{i}", batch="bench")
        sentences = split_sentences(render_answer(reference_answer(kb, record, rng)))
        k = min(rng.randint(3, 12), len(sentences))
        if k < 3:
            continue
        start = rng.randint(0, len(sentences) - k)
        responses.append(sentences[start : start + k])
    return responses


def reference_diversity(responses: list[list[str]], model: Any) -> list[float | None]:
    """Div per response with one fp32 `encode` call per response (the baseline)."""
    return [
        diversity_score(model.encode(s, normalize_embeddings=True, show_progress_bar=False))
        for s in responses
    ]


def engine_diversity(
    responses: list[list[str]],
    model: Any,
    batch_size: int,
    dtype: str,
    threads: int | str,
    batch_tokens: int = 1024,
) -> list[float | None]:
    embeddings = sentence_embeddings(
        responses,
        model=model,
        batch_size=batch_size,
        dtype=dtype,
        threads=threads,
        batch_tokens=batch_tokens,
    )
    return [diversity_score(e) for e in embeddings]


def _log(msg: str) -> None:
    print(f"[bench diversity] {msg}", file=sys.stderr, flush=True)


def _timed(fn: Any, *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def _engine_passes(fn: Any, seconds: float) -> tuple[Any, int, float]:
    """Repeat `fn()` until at least `seconds` have been spent: (last result, passes, seconds)."""
    passes, spent, out = 0, 0.0, None
    while passes == 0 or spent < seconds:
        out, t = _timed(fn)
        passes, spent = passes + 1, spent + t
    return out, passes, spent


def run(
    n: int,
    seed: int,
    batch_size: int,
    dtype: str,
    model_name: str,
    threads: int | str = "auto",
    min_engine_s: float = 10.0,
    batch_tokens: int = 1024,
) -> dict:
    import torch

    from cift.bench.roofline import matmul_probe, merge_probes, model_shapes
    from cift.scoring.threads import resolve_threads

    n_threads = resolve_threads(threads)
    torch.set_num_threads(n_threads)  # the reference's encode() runs with the same threads
    responses = build_responses(n, seed)
    n_sent = sum(map(len, responses))
    _log(
        f"{n} responses, {n_sent} sentences ({len({s for r in responses for s in r})} distinct); "
        f"{n_threads} threads (threads={threads})"
    )
    model = resolve_model(model_name)
    distinct = list({s: None for r in responses for s in r})
    tokens = int(tokenize(model, distinct)["attention_mask"].sum())  # what the engine feeds it
    shapes = model_shapes(model[0].auto_model)
    probe_dtype = compute_dtype(dtype, model.device.type) or torch.float32

    def probe() -> Any:
        return matmul_probe(shapes, 0.0, dtype=probe_dtype)

    def engine_pass() -> list[float | None]:
        return engine_diversity(responses, model, batch_size, dtype, n_threads, batch_tokens)

    before = probe()
    _log(f"roofline probe before the engine: {before.summary()}")
    reference_diversity(responses[:4], model)  # warm-up: first-call allocations and kernels
    # the engine's warm-up sees every batch shape once (steady state, as in `cift bench ifd`)
    _, warmup = _timed(engine_pass)
    _log(f"engine warm-up: {warmup:.1f} s; engine passes for ≥ {min_engine_s / 2:.0f} s …")
    engine, passes1, t_engine1 = _engine_passes(engine_pass, min_engine_s / 2)
    _log(
        f"engine: {passes1} passes in {t_engine1:.1f} s; reference (one fp32 encode per response) …"
    )
    ref, t_ref = _timed(reference_diversity, responses, model)
    _log(f"reference: {t_ref:.1f} s; engine passes for ≥ {min_engine_s / 2:.0f} s …")
    _, passes2, t_engine2 = _engine_passes(engine_pass, min_engine_s / 2)
    _log(f"engine: {passes2} passes in {t_engine2:.1f} s")
    after = probe()
    _log(f"roofline probe after the engine: {after.summary()}")
    roof = merge_probes([before, after])
    _log(f"roofline (all probe runs): {roof.summary()}")
    passes, t_total = passes1 + passes2, t_engine1 + t_engine2
    t_engine = t_total / passes
    diff = max(abs(a - b) for a, b in zip(engine, ref, strict=True))
    speedup = t_ref / t_engine
    fraction = tokens / t_engine / roof.best_tokens_per_s
    ceiling = t_ref * roof.best_tokens_per_s / tokens
    target = speedup_target(MIN_SPEEDUP, ceiling)
    return {
        "responses": n,
        "threads": n_threads,
        "ref_per_s": round(n / t_ref, 2),
        "engine_per_s": round(n / t_engine, 2),
        "engine_passes": passes,
        "engine_s": round(t_total, 2),
        "speedup": round(speedup, 2),
        "max_abs_diff": float(f"{diff:.3g}"),
        "distinct_tokens": tokens,
        "engine_tokens_per_s": round(tokens / t_engine, 1),
        "roofline_tokens_per_s": round(roof.best_tokens_per_s, 1),
        "matmul_flops": round(roof.flops),
        "probe_spread": round(roof.spread, 3),
        "roofline_fraction": round(fraction, 4),
        "speedup_ceiling": round(ceiling, 3),
        "speedup_target": round(target, 3),
        "target_met": speedup >= target and fraction >= ROOFLINE_FRACTION and diff <= MAX_ABS_DIFF,
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--responses", type=int, default=256, help="responses to score (>= 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256, help="engine sentences per batch")
    p.add_argument(
        "--batch-tokens", type=int, default=1024, help="engine padded tokens per batch at most"
    )
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument("--model", default="minilm", help="minilm or a sentence-transformers folder")
    p.add_argument("--threads", default="auto", help="torch threads for both sides: auto or N")
    p.add_argument(
        "--min-engine-s", type=float, default=10.0, help="timed engine work, seconds (≥ 10)"
    )


def cli(args: argparse.Namespace) -> int:
    """Run with parsed `args` (`add_arguments`); print the JSON line; 1 when a target is missed."""
    threads = args.threads if args.threads == "auto" else int(args.threads)
    result = run(
        args.responses,
        args.seed,
        args.batch_size,
        args.dtype,
        args.model,
        threads=threads,
        min_engine_s=args.min_engine_s,
        batch_tokens=args.batch_tokens,
    )
    print(json.dumps(result))
    return 0 if result["target_met"] else 1


def main(argv: list[str] | None = None) -> int:
    """`cift bench diversity [--responses N] …`: exit 1 when a target (module docstring) is
    missed."""
    p = argparse.ArgumentParser(prog="cift bench diversity", description=__doc__)
    add_arguments(p)
    return cli(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
