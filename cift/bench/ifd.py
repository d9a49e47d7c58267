"""`cift bench ifd`: the IFD engine against the reference loop, same model, same samples, same run.

Samples: ≥ 256 deterministic medical cases built from the shipped KB (the same patient rendered as
a clinical note, a lay message and a dialogue forms the input; the KB's expert answer is the
response), cut at sentence/line boundaries to drawn target lengths. `--lengths long` (default):
instruction 30–300 tokens, response 50–400 (the KB answers top out near 390); `--lengths short`:
instruction 10–60, response 20–150, what real instruction sets mostly hold.

Metrics (the last stdout line, one JSON object):
- tokens: non-padding tokens fed through the model over both passes of every sample (the same
  count for the reference and the engine: prompt + y per pass).
- ref_tokens_per_s / engine_tokens_per_s: steady state. The reference (fp32, per sample, full
  vocabulary logits) is timed after one warm-up sample, by default on the first `ref_samples`
  samples (its per-token rate is steady; stderr says so); the engine (bf16 where the CPU has
  fast bf16, compiled) is timed on all samples after its warm-up/compilation, which is reported
  as `warmup_s`. The engine time includes tokenisation; the reference's does not. Both run with
  the same torch thread count (`threads`, picked by `cift.scoring.threads` unless given), so the
  ratio measures the engine, not a thread setting.
- matmul_flops, roofline_tokens_per_s, probe_spread: `cift.bench.roofline` — the best of
  warmed runs of exactly the weight matmuls one token costs, at the model's shapes, in the
  engine's dtype and thread count (runs before and after the engine; spread = (best − worst) /
  best); flops_per_token = 2 × body linear weights + 2 × head weights × scored/all tokens;
  roofline_fraction = engine_tokens_per_s / roofline_tokens_per_s.
- speedup_ceiling = roofline_tokens_per_s / ref_tokens_per_s (what a perfect engine would gain);
  speedup_target = min(3, 0.65 × speedup_ceiling): on a CPU without fast bf16 both sides run fp32
  and the reference already runs near the matmul roofline, so 3× is out of any engine's reach.
- spearman (rank correlation of IFD) and max_rel_diff = max |IFD_engine − IFD_ref| / IFD_ref over
  the reference's samples with ≥ 16 response tokens.
Exit 1 when speedup < speedup_target, roofline_fraction < 0.65, spearman < 0.999, max_rel_diff >
0.05 or ref_tokens_per_s < 150 (a floor that catches a broken reference).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import re
import sys
import time
from typing import Any

from cift.bench.roofline import ROOFLINE_FRACTION, speedup_target

TARGETS = {
    "speedup": 3.0,
    "roofline_fraction": ROOFLINE_FRACTION,
    "spearman": 0.999,
    "max_rel_diff": 0.05,
    "ref_tokens_per_s": 150.0,
}
# (instruction tokens, response tokens) ranges per `--lengths`
LENGTHS = {"long": ((30, 300), (50, 400)), "short": ((10, 60), (20, 150))}
MIN_AGREEMENT_TOKENS = 16
BENCH_SYSTEM_PROMPT = (
    "You are an experienced physician. Reason step by step from the patient's record, state only "
    "what the record supports, then give the most likely diagnosis and advice."
)


def _log(msg: str) -> None:
    print(f"[bench ifd] {msg}", file=sys.stderr, flush=True)


def _pieces(text: str, by_line: bool) -> list[str]:
    """Sentences (or lines), each keeping its terminator, so ''.join(pieces) == text."""
    pattern = r"(?<=\n)" if by_line else r"(?<=[.!?\n])(?=\s|[A-Z0-9])"
    return [p for p in re.split(pattern, text) if p]


def _fit(pieces: list[str], budget: int, count, minimum: int) -> str:
    """The longest prefix of `pieces` within `budget` tokens, but at least `minimum` tokens
    (and one piece) when the pieces have that many."""
    out = [pieces[0]]
    for piece in pieces[1:]:
        if count("".join(out).strip()) >= minimum and count("".join([*out, piece])) > budget:
            break
        out.append(piece)
    return "".join(out).strip()


def build_samples(n: int, seed: int, tokenizer: Any, lengths: str = "long") -> list[dict]:
    """`n` natural-language medical samples with instruction and response token counts drawn
    from `LENGTHS[lengths]`."""
    from cift.data.answer import render_answer
    from cift.data.records import sample_record
    from cift.data.reference import reference_answer
    from cift.data.render import STYLES, instruction_for, render_record
    from cift.kb import load_kb

    if lengths not in LENGTHS:
        raise ValueError(f"lengths: {lengths!r} is not one of {sorted(LENGTHS)}")
    instruction_tokens, response_tokens = LENGTHS[lengths]
    kb = load_kb()
    rng = random.Random(f"bench-ifd-{seed}" if lengths == "long" else f"bench-ifd-{lengths}-{seed}")

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    samples = []
    for i in range(n):
        cond = rng.choice(kb.conditions)
        record = sample_record(kb, cond, rng, record_id=f"bench-{i}", batch="bench")
        styles = rng.sample(list(STYLES), len(STYLES))
        instruction = instruction_for(styles[0], rng)
        renderings = [render_record(record, s, rng, kb=kb) for s in styles]
        x_budget = rng.randint(*instruction_tokens) - count(instruction) - 2
        x_min = instruction_tokens[0] - count(instruction) - 2
        y_budget = rng.randint(*response_tokens)
        text = "\n\n".join(renderings)
        input_text = _fit(_pieces(text, by_line=False), max(x_budget, 1), count, x_min)
        answer = render_answer(reference_answer(kb, record, rng))
        output = _fit(_pieces(answer, by_line=True), y_budget, count, response_tokens[0])
        samples.append(
            {
                "id": f"bench-{i:04d}",
                "instruction": instruction,
                "input": input_text,
                "output": output,
            }
        )
    return samples


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def run_bench(
    n_samples: int = 256,
    seed: int = 0,
    *,
    ref_samples: int = 64,
    model_name: str = "smollm2_135m",
    source: str = "embedded",
    batch_size: int = 16,
    max_length: int = 1024,
    template: str = "chat",
    compile: bool | str = True,
    dtype: str = "auto",
    lengths: str = "long",
    threads: int | str = "auto",
) -> dict:
    """Build the samples, score them with the reference and the engine, return the metrics."""
    import torch

    from cift.bench.roofline import matmul_probe, merge_probes, model_shapes
    from cift.models.loading import ModelSpec, resolve_dtype
    from cift.scoring.ifd import IFDEngine, PromptBuilder
    from cift.scoring.reference import reference_scores_prepared
    from cift.scoring.threads import resolve_threads

    if n_samples < 1:
        raise ValueError("n_samples must be ≥ 1")
    n_threads = resolve_threads(threads)
    torch.set_num_threads(n_threads)  # the whole bench: reference, probe and engine alike
    spec = ModelSpec(name=model_name, source=source)
    t0 = time.perf_counter()
    loaded = spec.load(dtype="float32")
    ref_model, tok = loaded.model, loaded.tokenizer
    engine_dtype = resolve_dtype(dtype)
    engine_model = copy.deepcopy(ref_model).to(engine_dtype).eval()
    _log(
        f"model {model_name} loaded in {time.perf_counter() - t0:.1f}s; engine dtype "
        f"{engine_dtype}; {n_threads} threads (threads={threads})"
    )

    samples = build_samples(n_samples, seed, tok, lengths)
    builder = PromptBuilder(
        tok, system_prompt=BENCH_SYSTEM_PROMPT, template=template, max_length=max_length
    )
    prepared = builder.prepare(samples)
    ys = [p.n_response for p in prepared]
    xs = [p.cond_prefix for p in prepared]
    _log(
        f"{len(samples)} samples ({lengths}): response {min(ys)}–{max(ys)} tokens, conditional "
        f"prompt {min(xs)}–{max(xs)} tokens (template included)"
    )

    n_ref = len(prepared) if ref_samples <= 0 else min(ref_samples, len(prepared))
    ref_set = prepared[:n_ref]
    if n_ref < len(prepared):
        _log(
            f"reference timed on the first {n_ref} of {len(prepared)} samples (its per-token rate "
            "is steady); agreement metrics use those same samples"
        )
    reference_scores_prepared(ref_model, prepared[:1])  # warm-up, not timed
    t0 = time.perf_counter()
    ref_rows = reference_scores_prepared(ref_model, ref_set, progress=True)
    ref_s = time.perf_counter() - t0
    ref_tokens = sum(p.tokens for p in ref_set)
    ref_tps = ref_tokens / ref_s
    _log(f"reference: {ref_tokens} tokens in {ref_s:.1f}s = {ref_tps:.0f} tok/s")
    del ref_model

    engine = IFDEngine(
        engine_model,
        tok,
        system_prompt=BENCH_SYSTEM_PROMPT,
        template=template,
        max_length=max_length,
        batch_size=batch_size,
        compile=compile,
        threads=n_threads,
    )
    warmup_s = engine.compile_now() if compile is True else 0.0
    _log(f"engine warm-up (compile={compile}): {warmup_s:.1f}s")
    shapes = model_shapes(engine.lm)
    scored = 2 * sum(ys) / sum(p.tokens for p in prepared)
    probe_rows = engine.max_batch_tokens

    def probe():
        return matmul_probe(shapes, scored, dtype=engine_dtype, rows=probe_rows)

    before = probe()
    _log(f"roofline probe before the engine: {before.summary()}")
    t0 = time.perf_counter()
    rows = engine.score(samples)
    eng_s = time.perf_counter() - t0
    st = engine.stats
    eng_tps = st.tokens / eng_s
    _log(
        f"engine: {st.tokens} tokens ({st.padded_tokens} padded, {st.batches} batches, "
        f"{st.shapes} shapes) in {eng_s:.1f}s = {eng_tps:.0f} tok/s "
        f"(body {st.body_s:.1f}s, head {st.head_s:.1f}s)"
    )
    after = probe()
    _log(f"roofline probe after the engine: {after.summary()}")
    roof = merge_probes([before, after])
    _log(f"roofline (all probe runs): {roof.summary()}")

    by_id = {r["id"]: r for r in rows}
    pairs = [(r["ifd"], by_id[r["id"]]["ifd"]) for r in ref_rows]
    agree = [
        (a, b)
        for (a, b), r in zip(pairs, ref_rows, strict=True)
        if r["n_response_tokens"] >= MIN_AGREEMENT_TOKENS
    ]
    rho = spearman([a for a, _ in pairs], [b for _, b in pairs]) if len(pairs) > 1 else 1.0
    max_rel = max((abs(b - a) / a for a, b in agree), default=0.0)
    result = {
        "lengths": lengths,
        "samples": len(samples),
        "tokens": st.tokens,
        "threads": n_threads,
        "ref_tokens_per_s": round(ref_tps, 1),
        "engine_tokens_per_s": round(eng_tps, 1),
        "speedup": round(eng_tps / ref_tps, 3),
        "matmul_flops": round(roof.flops),
        "flops_per_token": round(roof.flops_per_token),
        "roofline_tokens_per_s": round(roof.best_tokens_per_s, 1),
        "probe_spread": round(roof.spread, 3),
        "roofline_fraction": round(eng_tps / roof.best_tokens_per_s, 4),
        "speedup_ceiling": round(roof.best_tokens_per_s / ref_tps, 3),
        "spearman": round(rho, 5),
        "max_rel_diff": round(max_rel, 5),
        "warmup_s": round(warmup_s, 1),
        "compiled": st.compiled,
    }
    target = speedup_target(TARGETS["speedup"], result["speedup_ceiling"])
    result["speedup_target"] = round(target, 3)
    result["target_met"] = bool(
        result["speedup"] >= result["speedup_target"]
        and result["roofline_fraction"] >= TARGETS["roofline_fraction"]
        and result["spearman"] >= TARGETS["spearman"]
        and result["max_rel_diff"] <= TARGETS["max_rel_diff"]
        and result["ref_tokens_per_s"] >= TARGETS["ref_tokens_per_s"]
    )
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cift bench ifd", description=__doc__.split("\n")[0])
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", type=int, default=256, help="samples to build (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--ref-samples",
        type=int,
        default=64,
        help="samples the reference is timed on (0 = all; default 64)",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--template", choices=["chat", "raw"], default="chat")
    p.add_argument("--no-compile", action="store_true", help="time the eager engine")
    p.add_argument(
        "--lengths",
        choices=sorted(LENGTHS),
        default="long",
        help="long: instruction 30–300, response 50–400 tokens; short: 10–60 and 20–150",
    )
    p.add_argument(
        "--threads", default="auto", help="torch threads for both sides: auto (measured) or N"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_from_args(args)


def run_from_args(args: argparse.Namespace) -> int:
    result = run_bench(
        args.samples,
        args.seed,
        ref_samples=args.ref_samples,
        batch_size=args.batch_size,
        max_length=args.max_length,
        template=args.template,
        compile=not args.no_compile,
        lengths=args.lengths,
        threads=args.threads if args.threads == "auto" else int(args.threads),
    )
    if args.samples < 256:
        _log(f"only {args.samples} samples: the target needs ≥ 256")
        result["target_met"] = False
    print(json.dumps(result))
    return 0 if result["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
