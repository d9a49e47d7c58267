"""How many torch threads the scoring engines use: measured, because the best count depends on load.

On a CPU shared with other jobs, torch's default (one thread per core) can be 10× slower than one
thread: every elementwise op is an OpenMP region whose barrier waits for the thread the kernel
descheduled (measured on a shared 2-core Xeon at load 15: 39 vs 385 tok/s for SmolLM2-135M's
body). On an idle machine all cores win. `pick_threads` times a small slice of the engines' own
work (a matmul followed by elementwise ops) at each candidate count, interleaved, and keeps the
fastest median.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _probe_step(x: Any, w: Any) -> None:
    import torch

    h = torch.nn.functional.linear(x, w)
    h = torch.nn.functional.silu(h) * h
    (h.float().pow(2).mean(-1, keepdim=True) + 1e-6).rsqrt()


def pick_threads(candidates: list[int] | None = None, rounds: int = 5) -> int:
    """The candidate thread count (default: 1 and every core) with the fastest median step."""
    import torch

    cores = available_cores()
    counts = sorted(set(candidates or [1, cores]))
    if len(counts) == 1:
        return counts[0]
    before = torch.get_num_threads()
    x = torch.randn(512, 576).to(torch.bfloat16)
    w = torch.randn(1536, 576).to(torch.bfloat16)
    times: dict[int, list[float]] = {n: [] for n in counts}
    try:
        with torch.inference_mode():
            for n in counts:  # warm-up: thread pools and kernels
                torch.set_num_threads(n)
                _probe_step(x, w)
            for _ in range(rounds):
                for n in counts:  # interleaved: both counts see the same load
                    torch.set_num_threads(n)
                    t0 = time.perf_counter()
                    _probe_step(x, w)
                    times[n].append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
    return min(counts, key=lambda n: statistics.median(times[n]))


def resolve_threads(threads: int | str) -> int:
    """ "auto" → `pick_threads()`; an int ≥ 1 → itself."""
    if threads == "auto":
        return pick_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be 'auto' or an integer ≥ 1, got {threads!r}")
    return threads


@contextmanager
def torch_threads(n: int) -> Iterator[int]:
    """Run the block with `n` torch threads; the previous count is restored after it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)
