"""`cift bench serve`: hot swap under load, with zero failed requests as the target.

A real server (this package's app, uvicorn on a free 127.0.0.1 port, in this process) serves the
configured model (`model`, default the embedded SmolLM2) over a TEMPORARY registry holding the
base plus `--adapters` (≥ 3) seeded LoRA adapters (random lora_B weights, so every version
answers differently); `--registry DIR` serves an existing registry instead (its `production`
alias is then moved by the bench and put back at the end). The user's registry is never touched
otherwise. `--clients` concurrent clients send test-set prompts (`data/global/test.jsonl`, else a
few built-in clinical cases) with `max_tokens=32`, temperature 0 and a 30 s timeout for
`--duration` seconds, while a swapper promotes and rolls back `production` every
duration/(swaps+1) seconds. A failure is a non-200 response, a timeout (or any transport error),
or an `X-Cift-Version` naming a version that was never promoted during the run.

Progress goes to stderr; the last stdout line is {"requests", "failures", "swaps",
"duration_s", "p50_ms", "p95_ms", "per_version", "target_met"}; exit 1 unless failures == 0,
swaps ≥ 10 and duration_s ≥ 60.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from cift.cli_common import add_set_option

TARGET_SWAPS = 10
TARGET_DURATION_S = 60.0
ROOT = Path(__file__).resolve().parents[2]
TEST_SET = Path("data") / "global" / "test.jsonl"
LORA_B_STD = 0.02

BUILTIN_CASES = [
    (
        "What is the most likely diagnosis? Explain your reasoning.",
        "54-year-old man, 3 days of fever, cough with green sputum and breathlessness on "
        "exertion. Crackles at the right base, temperature 38.9 C, oxygen saturation 92 %. "
        "Chest x-ray: right lower lobe consolidation; CRP markedly raised.",
    ),
    (
        "Reason step by step and give the diagnosis and advice.",
        "27-year-old woman, burning on passing urine and frequency for 2 days, suprapubic "
        "discomfort, no fever, no loin pain. Urine dipstick: leucocytes and nitrites positive.",
    ),
    (
        "Which condition best explains this presentation?",
        "63-year-old man, crushing central chest pain for 40 minutes spreading to the left arm, "
        "sweating and nausea. ECG: ST elevation in II, III and aVF; troponin raised.",
    ),
    (
        "Give the most likely diagnosis with your reasoning.",
        "8-year-old boy, wheeze and cough worse at night for 2 weeks after a cold, eczema as an "
        "infant. Expiratory wheeze on auscultation; peak flow improves after salbutamol.",
    ),
    (
        "What is going on? Reason from the findings.",
        "45-year-old woman, tiredness, weight gain and feeling cold for 6 months, dry skin, "
        "constipation. TSH raised, free T4 low.",
    ),
    (
        "Diagnose and advise.",
        "35-year-old man, sudden severe right loin pain radiating to the groin, restless, "
        "vomiting. Urine dipstick: blood positive. CT KUB: 5 mm stone in the right ureter.",
    ),
]


def _log(msg: str) -> None:
    print(f"[bench serve] {msg}", file=sys.stderr, flush=True)


def load_prompts(system_prompt: str, root: Path = ROOT, limit: int = 200) -> tuple[list, str]:
    """(chat messages per prompt, where they came from): the global test set when present."""
    from cift.data.sample import student_messages

    path = root / TEST_SET
    samples = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                sample = json.loads(line)
                if sample.get("instruction"):
                    samples.append(sample)
            if len(samples) >= limit:
                break
    source = str(TEST_SET)
    if not samples:
        samples = [{"instruction": i, "input": x} for i, x in BUILTIN_CASES]
        source = "built-in cases"
    return [student_messages(s, system_prompt) for s in samples], source


def seed_adapters(base: Any, lora: dict, out: Path, n: int, seed: int) -> list[Path]:
    """`n` LoRA adapters on the loaded base: PEFT's A init and seeded random B (so each version
    differs from the base and from the others), written as cift adapter folders."""
    import torch

    from cift.train.adapters import save_adapter
    from cift.train.module import wrap_lora

    folders = []
    for i in range(n):
        torch.manual_seed(seed + i)
        model = wrap_lora(copy.deepcopy(base.model), lora)
        gen = torch.Generator().manual_seed(seed + 1000 + i)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    noise = torch.randn(param.shape, generator=gen) * LORA_B_STD
                    param.copy_(noise.to(param.dtype))
        folder = out / f"adapter{i + 1}"
        save_adapter(model, folder, base_hash=base.base_hash, metadata={"bench_seed": seed + i})
        folders.append(folder)
        del model
    return folders


def temp_registry(folder: Path, base: Any, lora: dict, n: int, seed: int) -> tuple[Any, list]:
    from cift.registry import Registry

    registry = Registry(folder / "registry")
    versions = []
    for i, adapter in enumerate(seed_adapters(base, lora, folder / "adapters", n, seed)):
        meta = {"batch": f"bench{i + 1}", "source": "bench", "description": "seeded random LoRA"}
        versions.append(registry.register(adapter, meta, command="cift bench serve"))
    return registry, versions


class Server:
    """uvicorn serving `app` on a free 127.0.0.1 port in a daemon thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(
            app, log_level="warning", timeout_graceful_shutdown=5, lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the bench server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


class Swapper:
    """Moves `production` every `interval` s: promote, promote, rollback, … over `versions`."""

    def __init__(self, registry: Any, versions: list[str], interval: float) -> None:
        self.registry, self.versions, self.interval = registry, versions, interval
        self.promoted = {registry.resolve("production").version}
        self.swaps = 0
        self.moves: list[tuple[float, str]] = []
        self._next = 0

    def move(self, step: int) -> str | None:
        current = self.registry.resolve("production").version
        target = None
        if step % 3 == 2:
            try:
                target = self.registry.rollback(reason="bench serve", command="cift bench serve")
            except Exception as exc:  # an empty stack: promote instead
                _log(f"rollback refused ({exc}); promoting instead")
        if target is None:
            choices = [v for v in self.versions if v != current]
            target = choices[self._next % len(choices)]
            self._next += 1
            self.registry.promote(target, reason="bench serve", command="cift bench serve")
        self.promoted.add(target)
        if target != current:
            self.swaps += 1
            self.moves.append((time.monotonic(), target))
        return target

    async def run(self, deadline: float, moves: int) -> None:
        for step in range(moves):
            wake = deadline - self.interval * (moves - step)
            await asyncio.sleep(max(0.0, wake - time.monotonic()))
            if time.monotonic() >= deadline:
                break
            target = await asyncio.to_thread(self.move, step)
            _log(f"swap {self.swaps}: production -> {target}")


async def drive(url: str, prompts: list, args: argparse.Namespace, swapper: Swapper) -> dict:
    import httpx

    # (latency ms, status, version header, error, sent at)
    results: list[tuple[float, int | None, str | None, str | None, float]] = []
    start = time.monotonic()
    deadline = start + args.duration
    limits = httpx.Limits(max_connections=args.clients + 4, max_keepalive_connections=args.clients)
    body = {"model": "production", "max_tokens": args.max_tokens, "temperature": 0}

    async def client(i: int, http: httpx.AsyncClient) -> None:
        k = i
        while time.monotonic() < deadline:
            messages = prompts[k % len(prompts)]
            k += args.clients
            t0, sent = time.perf_counter(), time.monotonic()
            try:
                r = await http.post("/v1/chat/completions", json={**body, "messages": messages})
                ms = (time.perf_counter() - t0) * 1000
                error = None if r.status_code == 200 else f"HTTP {r.status_code}: {r.text[:200]}"
                version = r.headers.get("x-cift-version")
                results.append((ms, r.status_code, version, error, sent))
            except httpx.TimeoutException:
                ms = (time.perf_counter() - t0) * 1000
                error = f"timeout after {args.timeout} s"
                results.append((ms, None, None, error, sent))
            except httpx.HTTPError as exc:
                ms = (time.perf_counter() - t0) * 1000
                results.append((ms, None, None, f"{type(exc).__name__}: {exc}", sent))

    async def progress() -> None:
        while True:
            await asyncio.sleep(5)
            bad = sum(1 for r in results if r[3])
            _log(
                f"{time.monotonic() - start:5.0f} s: {len(results)} requests, {bad} failed, "
                f"{swapper.swaps} swaps"
            )

    async with httpx.AsyncClient(base_url=url, timeout=args.timeout, limits=limits) as http:
        reporter = asyncio.create_task(progress())
        swaps = asyncio.create_task(swapper.run(deadline, args.swaps))
        await asyncio.gather(*(client(i, http) for i in range(args.clients)))
        duration = time.monotonic() - start
        reporter.cancel()
        await swaps
    failures, per_version, latencies, reasons = 0, Counter(), [], Counter()
    for ms, _status, version, error, _at in results:
        if error is None and version not in swapper.promoted:
            error = f"version {version!r} was never promoted"
        if error:
            failures += 1
            reasons[error.split(":")[0]] += 1
            continue
        per_version[version] += 1
        latencies.append(ms)
    if reasons:
        _log(f"failures by reason: {dict(reasons)}")
    _log_switch_delays(results, swapper)
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else latencies * 99
    return {
        "requests": len(results),
        "failures": failures,
        "swaps": swapper.swaps,
        "duration_s": round(duration, 1),
        "p50_ms": round(q[49], 1) if q else None,
        "p95_ms": round(q[94], 1) if q else None,
        "per_version": dict(sorted(per_version.items())),
        "target_met": bool(
            failures == 0 and swapper.swaps >= TARGET_SWAPS and duration >= TARGET_DURATION_S
        ),
    }


def _log_switch_delays(results: list, swapper: Swapper) -> None:
    """Per alias move, seconds from the move to the first request sent after it that the new
    version served (None: no request was sent before the next move). Stderr only: the server
    follows the registry by polling, then loads the version beside the old one."""
    delays = []
    for i, (moved_at, target) in enumerate(swapper.moves):
        until = swapper.moves[i + 1][0] if i + 1 < len(swapper.moves) else float("inf")
        sent = [r[4] for r in results if r[2] == target and moved_at <= r[4] < until]
        delays.append(round(min(sent) - moved_at, 2) if sent else None)
    if delays:
        _log(f"seconds from each alias move to the first request the new version served: {delays}")


def run_bench(args: argparse.Namespace) -> dict:
    from cift.config import compose_config
    from cift.registry import Registry
    from cift.serve.app import create_app
    from cift.serve.cli import model_spec
    from cift.serve.engine import LocalEngine, MergedLoader

    cfg = compose_config(args.overrides, root=ROOT)
    s = cfg.serve
    prompts, source = load_prompts(cfg.system_prompt)
    _log(f"{len(prompts)} prompts from {source}")
    loader = MergedLoader(model_spec(cfg.model), device=str(s.device))
    t0 = time.perf_counter()
    base = loader.base
    _log(f"base model {cfg.model.name} loaded in {time.perf_counter() - t0:.1f} s ({base.dtype})")
    with tempfile.TemporaryDirectory(prefix="cift-bench-serve-") as tmp:
        if args.registry:
            registry = Registry(args.registry)
            versions = [r["version"] for r in registry.list()]
            versions = [v for v in versions if v != "v0000"] or versions
            if len(versions) < 2:
                versions = [r["version"] for r in registry.list()]
            if len(versions) < 2:
                raise SystemExit(f"{args.registry}: needs at least 2 versions to swap between")
        else:
            from omegaconf import OmegaConf

            lora = OmegaConf.to_container(cfg.train.lora, resolve=True)
            registry, versions = temp_registry(Path(tmp), base, lora, args.adapters, args.seed)
            registry.promote(versions[0], reason="bench serve: start", command="cift bench serve")
            _log(f"temporary registry {registry.root}: base + {versions}")
        original = registry.resolve("production").version
        engine = LocalEngine(
            registry,
            loader,
            max_batch_size=args.max_batch_size or int(s.max_batch_size),
            batch_wait_ms=float(s.batch_wait_ms),
            queue_size=int(s.queue_size),
            watch_interval_s=float(s.watch_interval_s),
            max_tokens_limit=int(s.max_tokens_limit),
            system_prompt=cfg.system_prompt,
        ).start()
        swapper = Swapper(registry, versions, args.duration / (args.swaps + 1))
        try:
            with Server(create_app(engine, manage_backend=False)) as server:
                _log(
                    f"serving {engine.version} on {server.url}; {args.clients} clients for "
                    f"{args.duration:.0f} s, {args.swaps} alias moves"
                )
                result = asyncio.run(drive(server.url, prompts, args, swapper))
        finally:
            engine.stop()
            if args.registry and registry.resolve("production").version != original:
                registry.promote(original, reason="bench serve: restore", command="cift bench")
                _log(f"production restored to {original}")
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cift bench serve", description=__doc__)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=TARGET_DURATION_S, help="seconds of load")
    p.add_argument("--clients", type=int, default=20, help="concurrent clients")
    p.add_argument("--swaps", type=int, default=12, help="alias moves spread over the run")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--timeout", type=float, default=30.0, help="client timeout, seconds")
    p.add_argument("--adapters", type=int, default=3, help="seeded adapters (temporary registry)")
    p.add_argument("--registry", help="serve this registry instead (its production is moved)")
    p.add_argument("--max-batch-size", type=int, default=None, help="default serve.max_batch_size")
    p.add_argument("--seed", type=int, default=0)
    add_set_option(p, "Hydra override (repeatable), e.g. -S model=tiny_random")


def run(args: argparse.Namespace) -> int:
    if args.adapters < 3 and not args.registry:
        raise SystemExit("--adapters must be >= 3")
    if args.clients < 1 or args.duration <= 0 or args.swaps < 1:
        raise SystemExit("--clients, --duration and --swaps must be positive")
    result = run_bench(args)
    print(json.dumps(result))
    return 0 if result["target_met"] else 1


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
