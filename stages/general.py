"""DVC stage `general`: generative replay data + held-out general instructions.

Usage: python stages/general.py   (reads params.yaml; writes data/general/)
"""

from __future__ import annotations

import time
from pathlib import Path


def main() -> None:
    from hydra.utils import instantiate

    from cift.config import load_params
    from cift.data.general import load_general_tasks, split_general, subsample
    from cift.generate.replay import replay_samples
    from cift.io.jsonl import write_json_atomic, write_jsonl_atomic
    from cift.models.local_chat import LocalTeacher
    from cift.tracking import log_summary, stage_run

    started = time.perf_counter()
    cfg = load_params()
    g = cfg.generate.general
    replay_tasks, heldout = split_general(load_general_tasks(), g.heldout_fraction, cfg.seed)
    replay_tasks = subsample(replay_tasks, g.get("max_replay"), cfg.seed)
    heldout = subsample(heldout, g.get("max_heldout"), cfg.seed, stream="heldout")
    model = instantiate(cfg.model)
    teacher = LocalTeacher(model, name=f"replay:{model.name}")
    samples, rejects, stats = replay_samples(
        replay_tasks,
        teacher,
        system_prompt="You are a helpful assistant.",
        max_new_tokens=g.max_new_tokens,
        min_chars=g.min_chars,
        max_retries=cfg.generate.max_retries,
        seed=cfg.seed,
    )
    out = Path(cfg.paths.data) / "general"
    write_jsonl_atomic(out / "replay.jsonl", samples)
    write_jsonl_atomic(out / "heldout.jsonl", heldout)
    write_jsonl_atomic(out / "rejects.jsonl", rejects)
    seconds = time.perf_counter() - started
    stats |= {"heldout": len(heldout), "seconds": round(seconds, 1)}
    stats["tokens_per_s"] = round(stats["completion_tokens"] / max(teacher.seconds, 1e-9), 1)
    write_json_atomic(out / "general.json", stats)
    with stage_run(cfg, "general") as run:
        log_summary(run, stats)
    print(stats)


if __name__ == "__main__":
    main()
