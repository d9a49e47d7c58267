"""DVC stage `evolve`: the evolved instruction pool for `generate.prompts=evolved`.

Usage: python stages/evolve.py
Writes data/prompts/{evolved,rejects}.jsonl and evolve.json. With standard prompts it writes an
empty pool without loading a model, so the stage costs nothing in the default DAG.
"""

from __future__ import annotations

import json
import time


def main() -> None:
    from hydra.utils import get_class, instantiate

    from cift.config import load_params
    from cift.generate.batches import evolved_pool_path
    from cift.generate.evolve import evolve, load_parts
    from cift.generate.teachers.mix import member_configs
    from cift.io.jsonl import write_json_atomic, write_jsonl_atomic
    from cift.models.local_chat import LocalTeacher
    from cift.tracking import log_summary, stage_run

    started = time.perf_counter()
    cfg = load_params()
    out = evolved_pool_path(cfg)
    pool, rejects, counts = [], [], {"attempted": 0, "kept": 0}
    if cfg.generate.prompts == "evolved":
        e = cfg.generate.evolve
        # the first teacher (of a mix's members) that can rewrite text and is not the run's own
        # model; otherwise (templates, the local model) the run's model evolves the instructions
        # with its default decoding
        backends = [c.backend for c in member_configs(cfg.teacher).values()]
        remote = [
            b
            for b in backends
            if getattr(get_class(b._target_), "rewrites_text", False)
            and not issubclass(get_class(b._target_), LocalTeacher)
        ]
        llm = instantiate(remote[0]) if remote else LocalTeacher(instantiate(cfg.model))
        pool, rejects, counts = evolve(
            llm,
            load_parts(),
            operations=list(e.operations),
            rounds=int(e.rounds),
            max_new_tokens=int(e.max_new_tokens),
            seed=cfg.seed,
        )
    write_jsonl_atomic(out, pool)
    write_jsonl_atomic(out.with_name("rejects.jsonl"), rejects)
    summary = {
        "prompts": cfg.generate.prompts,
        **counts,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json_atomic(out.with_name("evolve.json"), summary)
    with stage_run(cfg, "evolve") as run:
        log_summary(run, summary, prompts=summary["prompts"])
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
