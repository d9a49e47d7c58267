"""`cift score ifd` and `cift bench ifd`: thin commands over the IFD engine.

`cift score ifd --in DATA.jsonl --out SCORES.jsonl [-S OVERRIDE…]` composes the config from the
repo's conf/ with the Hydra overrides (e.g. `filter.ifd.template=raw`, `model=tiny_random`),
loads the proxy (`proxy.model`, plus a PEFT adapter merged in when `+proxy.adapter=DIR` is given),
reads Alpaca or ShareGPT JSONL through the one sample reader, and writes one line per accepted
sample, in input order: {"id", "ppl_cond", "ppl_direct", "ifd", "n_response_tokens", "flags"}.
Rejected lines go to `<out>.rejects.jsonl` (SCORES.jsonl → SCORES.rejects.jsonl, the repo's
convention; always written, possibly empty), one stderr line each; the last stdout line is
{"lines", "accepted", "rejected", "blank", "scored", "tokens", "seconds", "tokens_per_s"}:
`seconds` runs from the process's start (interpreter, imports and model load included: the
figure to compare with a plain script), `tokens` counts both passes' tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

_IMPORTED = time.perf_counter()


def process_seconds() -> float:
    """Seconds since this process started (Linux: /proc; elsewhere: since this module loaded)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


def score_ifd_command(in_path: str | Path, out_path: str | Path, overrides: list[str]) -> int:
    """Score a JSONL file; see the module docstring. Returns the exit code."""
    from hydra.utils import instantiate

    from cift.config import compose_config
    from cift.data.check import rejects_path  # data/x.jsonl -> data/x.rejects.jsonl
    from cift.io.jsonl import read_samples, write_jsonl_atomic, write_rejects
    from cift.models.version import load_version
    from cift.scoring.ifd import IFDEngine

    cfg = compose_config(overrides)
    ifd_cfg = OmegaConf.select(cfg, "filter.ifd", default=None) or {}
    template = ifd_cfg.get("template", "chat")
    max_length = int(ifd_cfg.get("max_length", 1024))
    batch_size = int(ifd_cfg.get("batch_size", 16))
    dtype = ifd_cfg.get("dtype", None)

    read = read_samples(in_path, fmt="auto")
    for r in read.rejects:
        print(r.message, file=sys.stderr)
    rows: list[dict] = []
    tokens = 0
    if read.accepted:
        t0 = time.perf_counter()
        adapter = OmegaConf.select(cfg, "proxy.adapter", default=None)
        loaded = load_version(instantiate(cfg.proxy.model), adapter, dtype=dtype)
        model, tokenizer = loaded.model, loaded.tokenizer
        print(
            f"scoring {len(read.accepted)} samples with {cfg.proxy.model.name} "
            f"(template={template}, dtype={next(model.parameters()).dtype}, "
            f"loaded in {time.perf_counter() - t0:.1f}s)",
            file=sys.stderr,
        )
        t0 = time.perf_counter()
        engine = IFDEngine(
            model,
            tokenizer,
            system_prompt=cfg.system_prompt,
            template=template,
            max_length=max_length,
            batch_size=batch_size,
        )
        rows = engine.score(read.accepted)
        st = engine.stats
        tokens = st.tokens
        print(
            f"scored in {time.perf_counter() - t0:.1f}s ({st.tokens} tokens, {st.batches} "
            f"batches, {st.threads} threads, compiled={st.compiled})",
            file=sys.stderr,
        )
    write_jsonl_atomic(out_path, rows)
    write_rejects(rejects_path(out_path), read.rejects)
    summary = {
        "lines": read.lines,
        "accepted": len(read.accepted),
        "rejected": len(read.rejects),
        "blank": read.blank,
        "scored": len(rows),
        "tokens": tokens,
    }
    seconds = process_seconds()
    summary["seconds"] = round(seconds, 2)
    summary["tokens_per_s"] = round(tokens / seconds, 1) if seconds > 0 else 0.0
    print(json.dumps(summary))
    return 0


def bench_ifd_command(argv: list[str] | None = None) -> int:
    """`cift bench ifd [--samples N] [--ref-samples N] …` (see cift.bench.ifd)."""
    from cift.bench.ifd import main

    return main(argv)


def main(argv: list[str] | None = None) -> int:
    """`python -m cift.scoring.commands score --in … --out … [OVERRIDES…]` or `… bench …`."""
    parser = argparse.ArgumentParser(prog="python -m cift.scoring.commands")
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("score", help="IFD scores of a JSONL file")
    p.add_argument("--in", dest="in_path", required=True)
    p.add_argument("--out", dest="out_path", required=True)
    p.add_argument("overrides", nargs="*")
    sub.add_parser("bench", help="cift bench ifd", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.what == "bench":
        return bench_ifd_command(rest)
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    return score_ifd_command(args.in_path, args.out_path, args.overrides)


if __name__ == "__main__":
    sys.exit(main())
